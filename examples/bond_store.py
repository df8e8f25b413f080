# An application-owned key store for bonding, persisted as JSON: what _IRQ_GET_SECRET and
# _IRQ_SET_SECRET ask of the program. Keys and values are opaque bytes; they are stored
# as hex strings because json.dump of bytes only works on MicroPython.
import binascii
import json


class BondStore:
    def __init__(self, path):
        self._path = path
        self._secrets = {}
        self.loaded = 0
        self.stored = 0
        try:
            with open(path) as f:
                for sec_type, key, value in json.load(f):
                    self._secrets[(sec_type, key)] = value
            self.loaded = len(self._secrets)
        except (OSError, ValueError):
            pass

    def get(self, sec_type, index, key):
        """_IRQ_GET_SECRET: the value for a key, or the index-th of that type when key is None."""
        if key is None:
            values = [v for (t, k), v in sorted(self._secrets.items()) if t == sec_type]
            value = values[index] if index < len(values) else None
        else:
            value = self._secrets.get((sec_type, binascii.hexlify(key).decode()))
        return None if value is None else binascii.unhexlify(value)

    def set(self, sec_type, key, value):
        """_IRQ_SET_SECRET: store (or, with value None, delete); True on success."""
        key = binascii.hexlify(key).decode()
        if value is None:
            self._secrets.pop((sec_type, key), None)
        else:
            self._secrets[(sec_type, key)] = binascii.hexlify(value).decode()
            self.stored += 1
        with open(self._path, "w") as f:
            json.dump([[t, k, v] for (t, k), v in self._secrets.items()], f)
        return True
