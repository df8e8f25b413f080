"""Printing and writing the results: the console table, JSON, Markdown, the PNG chart."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._common import Result
from .hop import FIGURES, ITERATIONS, PRIMITIVES, Spread
from .hop import spreads as hop_spreads

RESULTS = Path(__file__).resolve().parent / "results"
#: Heading of the hand-written part of BASELINE.md, kept when ``--baseline`` rewrites it.
ANALYSIS = "## Analysis"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "MiB", "x"):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,.0f}"


def fmt_range(spread: Spread | None, unit: str) -> str:
    """A row's spread as ``lowest..highest`` run."""
    if spread is None:
        return "-"
    return f"{fmt(spread.low, unit)}..{fmt(spread.high, unit)}"


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    table: list[tuple[str, ...]] = []
    for r in results:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        table.append(
            (
                str(r.workload),
                r.name,
                fmt(r.facade, r.unit),
                fmt_range(r.spread("facade"), r.unit),
                fmt(r.raw, r.unit),
                fmt_range(r.spread("raw"), r.unit),
                ratio,
                str(r.runs() or "-"),
                r.unit,
            )
        )
    return table


HEADER = (
    "#",
    "workload",
    "facade",
    "facade min..max",
    "raw Bumble",
    "raw min..max",
    "facade/raw",
    "runs",
    "unit",
)
#: Columns of ``HEADER`` that hold numbers (right-aligned).
NUMERIC = (0, 2, 3, 4, 5, 6, 7)


def floor_fmt(key: str, spread: Spread) -> str:
    """One round-trip figure as ``median (min..max)``."""
    digits = 1 if key in ("overhead_hops", "above_floor_pct", "hop") else 0
    sign = "+" if key == "above_floor_pct" else ""

    def one(value: float) -> str:
        return f"{value:{sign},.{digits}f}"

    return f"{one(spread.median)} ({one(spread.low)}..{one(spread.high)})"


ROUND_TRIP_HEADER = ("#", "round trip", "crossings", *FIGURES.values())


def round_trip_rows(results: list[Result]) -> list[tuple[str, ...]]:
    """Each round-trip row against the floor: per operation, in µs and in unit hops."""
    table: list[tuple[str, ...]] = []
    for r in results:
        figures = r.floor()
        if figures is None or r.crossings is None:
            continue
        table.append(
            (
                str(r.workload),
                r.name,
                f"{r.crossings:g}",
                *(floor_fmt(key, figures[key]) for key in FIGURES),
            )
        )
    return table


HOP_HEADER = ("#", "measured with the repetitions of", *PRIMITIVES.values())


def hop_rows(results: list[Result]) -> list[tuple[str, ...]]:
    """The bare hops, per round-trip row (each measured between that row's repetitions)."""
    table: list[tuple[str, ...]] = []
    for r in results:
        if r.crossings is None or not r.hops:
            continue
        measured = hop_spreads(r.hops)
        cells = []
        for name in PRIMITIVES:
            spread = measured.get(name)
            cells.append("-" if spread is None else floor_fmt("hop", spread))
        table.append((str(r.workload), r.name, *cells))
    return table


def plain_table(header: tuple[str, ...], body: list[tuple[str, ...]], right: set[int]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    table = [header, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def console_table(results: list[Result]) -> str:
    return plain_table(HEADER, rows(results), set(NUMERIC))


#: What the floor tables show, said once above them (console and Markdown).
FLOOR_TEXT = (
    "Round trips against the floor: per operation, median (min..max) over the repetitions, "
    "each repetition's facade run, raw run and bare hop taken together. crossings = bare "
    "main -> loop thread -> main round trips the facade operation makes at least; overhead "
    "= facade - raw; overhead hops = overhead / the call_soon_threadsafe+Lock hop; floor = "
    "raw + crossings x that hop; above floor = facade / floor - 1."
)
HOP_TEXT = (
    "Bare round trip main -> loop thread -> main, µs: each measurement the median of "
    f"{ITERATIONS:,} round trips, made after each repetition of the row; median (min..max) "
    "of the measurements."
)


def floor_tables(results: list[Result]) -> str:
    """The round-trip and hop tables, or nothing if no round-trip row ran."""
    trips = round_trip_rows(results)
    if not trips:
        return ""
    return "\n".join(
        [
            textwrap.fill(FLOOR_TEXT, 100),
            "",
            plain_table(ROUND_TRIP_HEADER, trips, set(range(2, len(ROUND_TRIP_HEADER)))),
            "",
            textwrap.fill(HOP_TEXT, 100),
            "",
            plain_table(HOP_HEADER, hop_rows(results), set(range(2, len(HOP_HEADER)))),
        ]
    )


@dataclass
class Target:
    text: str
    met: bool | None  # None: not measured in this run
    detail: str


def _find(results: list[Result], name: str) -> Result | None:
    return next((r for r in results if r.name == name), None)


def targets(results: list[Result]) -> list[Target]:
    """The issue's targets, checked against this run."""
    out = []
    throughput = [r for r in results if r.workload in (1, 2, 3, 4, 5)]
    if throughput:
        worst = min(throughput, key=lambda r: r.ratio or 0)
        missed = [r for r in throughput if (r.ratio or 0) < 0.9]
        out.append(
            Target(
                "throughput ratio facade/raw >= 0.9 (workloads 1-5)",
                not missed,
                f"{len(throughput) - len(missed)}/{len(throughput)} rows met; lowest "
                f"{worst.ratio:.2f} ({worst.name})",
            )
        )
    p99 = _find(results, "dispatch latency p99, 10k events/s")
    if p99 is not None and p99.facade is not None:
        out.append(
            Target(
                "dispatch latency p99 <= 1 ms under load",
                p99.facade <= 1.0,
                f"p99 {p99.facade:.3f} ms",
            )
        )
    growth = [r for r in results if r.name.startswith("RSS growth during the flood")]
    if growth:
        worst_growth = max(r.facade or 0 for r in growth)
        out.append(
            Target(
                "memory flat during the scan flood",
                worst_growth < 1.0,
                f"largest growth {worst_growth:.2f} MiB",
            )
        )
    default_drops = _find(results, "scan reports dropped per run, rxbuf 16384 (default)")
    small_drops = _find(results, "scan reports dropped per run, rxbuf 256")
    if default_drops is not None and small_drops is not None:
        out.append(
            Target(
                "drops only when rxbuf is too small, and counted",
                default_drops.facade == 0,
                f"default rxbuf: {default_drops.facade:.0f}, rxbuf 256: "
                f"{small_drops.facade:.0f} per run (counted by irq_stats)",
            )
        )
    active = _find(results, "BLE() to active(True), first in the process")
    if active is not None and active.facade is not None:
        out.append(
            Target(
                "active(True) <= 0.3 s after import",
                active.facade <= 300,
                f"{active.facade:.0f} ms",
            )
        )
    imported = _find(results, "import time")
    if imported is not None and imported.facade is not None:
        out.append(
            Target(
                "import mpbluetooth <= 0.3 s", imported.facade <= 300, f"{imported.facade:.0f} ms"
            )
        )
    hub = _find(results, "hub / one process, notifications 20 B")
    if hub is not None and hub.facade is not None:
        out.append(
            Target("cross-process >= 0.5 of in-process", hub.facade >= 0.5, f"{hub.facade:.2f}x")
        )
    return out


def machine() -> dict[str, str]:
    """What a reader needs to compare a run with theirs."""
    import bumble

    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{os.cpu_count()} vCPU" + (f", {model}" if model else ""),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "bumble": getattr(bumble, "__version__", "?"),
    }


def markdown(results: list[Result], mode: str) -> str:
    info = machine()
    lines = [
        "# mpbluetooth benchmarks",
        "",
        f"`python -m benchmarks{' --quick' if mode == 'quick' else ''}` ({mode} run), "
        f"{info['date']}.",
        "",
        f"Machine: {info['cpu']}; {info['os']}; Python {info['python']}; bumble {info['bumble']}.",
        "",
        "Facade = mpbluetooth's `BLE` API (a MicroPython-style program); raw = Bumble's own "
        "async API; both on our `SimLink` + `SimController`, in one process, medians of the "
        "repetitions with the lowest and highest run. See `benchmarks/README.md` for what "
        "each row measures.",
        "",
        *md_table(HEADER, rows(results), set(NUMERIC)),
    ]
    trips = round_trip_rows(results)
    if trips:
        right = set(range(2, len(ROUND_TRIP_HEADER)))
        lines += ["", "## Round trips against the floor", "", FLOOR_TEXT, ""]
        lines += md_table(ROUND_TRIP_HEADER, trips, right)
        lines += ["", HOP_TEXT, ""]
        lines += md_table(HOP_HEADER, hop_rows(results), set(range(2, len(HOP_HEADER))))
    lines += ["", "## Targets", ""]
    for target in targets(results):
        mark = {True: "met", False: "missed", None: "not measured"}[target.met]
        lines.append(f"- **{mark}**: {target.text} — {target.detail}")
    notes = [r for r in results if r.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {r.name}: {r.note}" for r in notes]
    return "\n".join(lines) + "\n"


def md_table(header: tuple[str, ...], body: list[tuple[str, ...]], right: set[int]) -> list[str]:
    """A Markdown table, numeric columns right-aligned."""
    align = ["---:" if i in right else ":---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def write(results: list[Result], mode: str, baseline: bool, log: Callable[[str], None]) -> None:
    RESULTS.mkdir(exist_ok=True)
    data = {r.name: r.as_json() for r in results}
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(results, mode)
    (RESULTS / "latest.md").write_text(text)
    log(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}")
    if baseline:
        # Keep the hand-written analysis of the previous reference run, if any.
        path = RESULTS / "BASELINE.md"
        previous = path.read_text() if path.exists() else ""
        marker = previous.find(ANALYSIS)
        path.write_text(text + ("\n" + previous[marker:] if marker >= 0 else ""))
        log(f"wrote {RESULTS / 'BASELINE.md'}")
    chart(results, RESULTS / "throughput.png", log)


def chart(results: list[Result], path: Path, log: Callable[[str], None]) -> None:
    """Payload throughput against payload size, facade vs raw (needs matplotlib)."""
    series = {
        1: "notifications",
        2: "writes without response",
    }
    points = {w: [r for r in results if r.workload == w and r.payload] for w in series}
    if not any(points.values()):
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed (pip install '.[bench]'): no chart")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {1: "tab:blue", 2: "tab:green"}
    for workload, label in series.items():
        rs = sorted(points[workload], key=lambda r: r.payload or 0)
        if not rs:
            continue
        sizes = [r.payload or 0 for r in rs]
        for side, style in (("facade", "-o"), ("raw", ":s")):
            kib = [(getattr(r, side) or 0) * (r.payload or 0) / 1024 for r in rs]
            ax.plot(
                sizes,
                kib,
                style,
                color=colors[workload],
                label=f"{label}, {'mpbluetooth' if side == 'facade' else 'raw Bumble'}",
            )
    ax.set_xlabel("payload per message (bytes, ATT MTU 247)")
    ax.set_ylabel("payload throughput (KiB/s)")
    ax.set_title("GATT throughput on the simulated link (27-byte ACL buffers)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"wrote {path}")
