"""Reading the monitoring state for a scrape on the thread that owns it, between its batches.

The application's loop changes the per-partition state; a scrape arrives on a server thread.
Instead of the scrape taking the application lock for as long as it reads (and the loop waiting
for it, with both threads fighting for the GIL meanwhile), the scrape hands its reader to the
loop, which runs it between two batches, where the state is consistent and nothing else
touches it; the scrape thread then renders the families on its own. When the loop does not
answer within ``timeout`` seconds (it is waiting for records, restoring a partition, or in a
long batch), the reader runs on the scrape thread under the lock, as it would without this.

>>> lock = threading.Lock()
>>> reads = OwnerReads(lock, timeout=0.05)
>>> reads.read(lambda: 42)  # no owner serving: under the lock, on this thread
42
>>> reads.started()
>>> reads.read(lambda: 7)  # the owner is this thread: runs at once
7
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["OwnerReads"]

T = TypeVar("T")


class _Request(Generic[T]):
    __slots__ = ("done", "error", "reader", "result", "taken")

    def __init__(self, reader: Callable[[], T]) -> None:
        self.reader = reader
        self.done = threading.Event()
        self.taken = False
        self.result: T | None = None
        self.error: BaseException | None = None


class OwnerReads:
    """Runs readers of the state on the thread that owns it (see the module docstring).

    The owner calls :meth:`started` from its own thread, :meth:`serve` between its units of
    work (a cheap check when nothing waits) and :meth:`stopped` when it stops serving.
    """

    def __init__(self, lock: threading.Lock, timeout: float = 0.25) -> None:
        self.lock = lock
        self.timeout = timeout
        self._guard = threading.Lock()
        self._queue: list[_Request[Any]] = []
        self._owner: int | None = None
        #: Reads the owner served, and reads that ran under the lock instead.
        self.served = 0
        self.fallbacks = 0

    def started(self) -> None:
        self._owner = threading.get_ident()

    def stopped(self) -> None:
        with self._guard:
            self._owner = None
        self.serve()  # whoever still waits

    def read(self, reader: Callable[[], T]) -> T:
        """``reader()``, run by the owner between two units of work, or under the lock."""
        owner = self._owner
        if owner is None or owner == threading.get_ident():
            with self.lock:
                return reader()
        req: _Request[T] = _Request(reader)
        with self._guard:
            self._queue.append(req)
        if not req.done.wait(self.timeout):
            with self._guard:
                taken = req.taken
                if not taken:
                    self._queue.remove(req)
            if not taken:
                self.fallbacks += 1
                with self.lock:
                    return reader()
            req.done.wait()  # the owner is running it now
        if req.error is not None:
            raise req.error
        return req.result  # type: ignore[return-value]

    def serve(self) -> None:
        """Run the readers waiting (call it on the owner's thread, between units of work)."""
        if not self._queue:
            return
        with self._guard:
            reqs, self._queue = self._queue, []
            for r in reqs:
                r.taken = True
        for r in reqs:
            try:
                with self.lock:
                    r.result = r.reader()
            except BaseException as exc:
                r.error = exc
            finally:
                self.served += 1
                r.done.set()
