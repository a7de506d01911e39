"""The one extension mechanism: a dict from a key (an aten op, a module type, a name) to the
function that handles it, filled by a decorator that refuses a second entry for a key."""
from __future__ import annotations


class Registry(dict):
    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, *keys):
        def add(fn):
            for key in keys:
                if key in self:
                    raise ValueError(f"two {self.what}s for {getattr(key, '__name__', key)}: "
                                     f"{self[key].__name__} and {fn.__name__}")
                self[key] = fn
            return fn
        return add
