"""The friendly REPL's line editor and its "is there more?" rule, as MicroPython's
``shared/readline/readline.c`` and ``py/repl.c`` have them, so a user at ``mpremote repl``
types as at a board:

* echo; backspace (four spaces at once inside an indent); the up and down arrows recall
  earlier lines; ``\\r``, ``\\n`` or ``\\r\\n`` end a line;
* auto-indent: a continuation line starts at the previous line's indent, one level more
  after a ``:``; a space or Tab right after it turns auto-indent off for the statement
  (a space also takes back three of the spaces); two blank lines in a row get none;
* Tab after whitespace (or on an empty line) is four spaces; there is no completion;
* Ctrl-A..Ctrl-E on an empty line, and Ctrl-C anywhere, end the line with that key;
* a statement continues while a bracket or triple quote is open, a line ends with ``\\``,
  or it starts with a compound keyword and its last line was not empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

CTRL_A, CTRL_C, CTRL_E = 1, 3, 5
_INDENT: Final = b"    "
_COMPOUND: Final = re.compile(r"(@|(if|while|for|try|with|def|class|async)(?![A-Za-z0-9_]))")


class LineEditor:
    """One REPL's editor: its history and its auto-indent state live across lines."""

    def __init__(self, read_byte: Callable[[], int], write: Callable[[bytes], None]) -> None:
        self._read_byte = read_byte
        self._write = write
        self._history: list[str] = []
        self._last_nl = 0
        self._auto_indent = True

    def readline(self, prompt: bytes, before: str = "") -> tuple[int, str]:
        """One line after ``prompt``: (0, text) for a line, (key, '') for a control key.
        ``before``: the statement's lines so far, each ended by ``\\n`` (auto-indent)."""
        if not before:
            self._auto_indent = True
        self._write(prompt)
        line = bytearray(self._indent_after(before))
        just_added = bool(line)
        self._write(bytes(line))
        recall = len(self._history)
        escape = 0
        while True:
            char = self._read_byte()
            if escape:
                escape, recall = self._escape(escape, char, line, prompt, recall)
                continue
            if (CTRL_A <= char <= CTRL_E and not line) or char == CTRL_C:
                return char, ""
            if char in (10, 13):
                if self._last_nl in (0, char):
                    self._last_nl = char
                    self._write(b"\r\n")
                    text = line.decode("utf-8", "replace")
                    if text.strip() and (not self._history or self._history[-1] != text):
                        self._history.append(text)
                    return 0, text
                self._last_nl = 0
                continue
            self._last_nl = 0
            if char == 27:
                escape = 1
            elif char in (8, 127):
                self._backspace(line)
            elif just_added and char in (9, 32):
                self._auto_indent = False  # Tab keeps the indent, a space takes back 3
                if char == 32:
                    del line[-3:]
                    self._write(b"\b\b\b\x1b[K")
            elif char == 9:
                if not line or line[-1:].isspace():
                    line += _INDENT
                    self._write(_INDENT)
            elif char >= 32:
                line.append(char)
                self._write(bytes([char]))
            just_added = False

    def _indent_after(self, before: str) -> bytes:
        """readline_auto_indent: the previous line's indent, one more after a colon."""
        if not self._auto_indent or len(before) < 2 or not before.endswith("\n"):
            return b""
        lines = before[:-1].split("\n")
        last = lines[-1]
        if len(lines) > 2 and not last.strip(" ") and not lines[-2].strip(" "):
            return b""  # two blank lines in a row: the statement may end
        levels = (len(last) - len(last.lstrip(" "))) // 4 + last.endswith(":")
        return _INDENT * levels

    def _backspace(self, line: bytearray) -> None:
        if not line:
            return
        count = 4 if len(line) >= 4 and not line.strip(b" ") else 1
        del line[-count:]
        while count == 1 and line and 0x80 <= line[-1] < 0xC0:  # the rest of a UTF-8 char
            del line[-1]
        self._write(b"\b" * count + b"\x1b[K")

    def _escape(
        self, state: int, char: int, line: bytearray, prompt: bytes, recall: int
    ) -> tuple[int, int]:
        """ESC [ A / ESC [ B recall the history; other sequences are read and ignored."""
        if state == 1:
            return (2 if char in (0x4F, 0x5B) else 0), recall  # 'O' or '['
        if 0x30 <= char <= 0x3F:
            return 2, recall  # a parameter byte
        if char in (0x41, 0x42) and self._history:  # 'A' up, 'B' down
            recall = max(0, recall - 1) if char == 0x41 else min(len(self._history), recall + 1)
            text = self._history[recall] if recall < len(self._history) else ""
            line[:] = text.encode()
            self._write(b"\r" + prompt + bytes(line) + b"\x1b[K")
        return 0, recall


def continues(source: str) -> bool:
    """mp_repl_continue_with_input: whether the REPL asks for another line (``...``)."""
    if not source:
        return False
    quote = ""
    open_ = {"(": 0, "[": 0, "{": 0}
    index = 0
    while index < len(source):
        char = source[index]
        if char in "'\"":
            if quote in ("", char * 3) and source.startswith(char * 3, index):
                quote = "" if quote else char * 3
                index += 2
            elif quote in ("", char):
                quote = "" if quote else char
        elif char == "\\" and source[index + 1 : index + 2] in ("'", '"', "\\"):
            if quote:
                index += 1
        elif not quote and char in "([{":
            open_[char] += 1
        elif not quote and char in ")]}":
            open_["([{"[")]}".index(char)]] -= 1
        index += 1
    if len(quote) == 3:
        return True
    if max(open_.values()) > 0 and not quote:
        return True
    if source.endswith("\\"):
        return True
    return bool(_COMPOUND.match(source)) and not source.endswith("\n")
