"""A value recomputed when it is older than a time to live: the PACS's series list and label index."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class TTLValue:
    """One value recomputed when older than ``ttl`` seconds (or after :meth:`clear`)."""

    def __init__(self, ttl: float, compute: Callable[[], Any]):
        self.ttl, self.compute = float(ttl), compute
        self._value, self._at = None, -1e18
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._value = self.compute()
                self._at = time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._at = -1e18
