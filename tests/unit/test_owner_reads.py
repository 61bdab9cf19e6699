"""metrics/reads.py: a scrape's reader runs on the thread that owns the state, between its
batches, or under the lock when that thread does not answer."""

from __future__ import annotations

import threading

import pytest

from stream_monitor.metrics.reads import OwnerReads


class _Owner(threading.Thread):
    """Plays the application loop: started(), then serve() between 'batches' until told to
    stop, then stopped()."""

    def __init__(self, reads: OwnerReads) -> None:
        super().__init__(daemon=True)
        self.reads = reads
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.batches = 0

    def run(self) -> None:
        self.reads.started()
        self.ready.set()
        while not self.stop.is_set():
            self.reads.serve()
            with self.reads.lock:  # a batch changes the state under the lock
                self.batches += 1
            self.stop.wait(0.001)
        self.reads.stopped()


def test_a_read_runs_on_the_owner_thread_between_batches() -> None:
    reads = OwnerReads(threading.Lock(), timeout=30.0)
    owner = _Owner(reads)
    owner.start()
    owner.ready.wait()
    try:
        ran_on = reads.read(threading.get_ident)
        assert ran_on == owner.ident != threading.get_ident()
        assert (reads.served, reads.fallbacks) == (1, 0)
    finally:
        owner.stop.set()
        owner.join()


def test_a_reader_error_reaches_the_scrape_and_the_owner_goes_on() -> None:
    reads = OwnerReads(threading.Lock(), timeout=30.0)
    owner = _Owner(reads)
    owner.start()
    owner.ready.wait()

    def broken() -> int:
        raise KeyError("gone")

    try:
        with pytest.raises(KeyError):
            reads.read(broken)
        assert reads.read(lambda: 5) == 5 and owner.is_alive()
    finally:
        owner.stop.set()
        owner.join()


def test_an_owner_that_does_not_serve_is_replaced_by_the_lock() -> None:
    lock = threading.Lock()
    reads = OwnerReads(lock, timeout=0.01)
    started = threading.Event()

    def silent_owner() -> None:
        reads.started()  # ... and never serves
        started.set()

    t = threading.Thread(target=silent_owner)
    t.start()
    t.join()
    assert started.is_set()
    held: list[bool] = []
    ran_on = reads.read(lambda: (held.append(lock.locked()), threading.get_ident())[1])
    assert ran_on == threading.get_ident() and held == [True]
    assert (reads.served, reads.fallbacks) == (0, 1)
    # nothing is left queued for the owner to run later
    reads.serve()
    assert reads.served == 0


def test_without_an_owner_reads_run_under_the_lock_on_the_caller() -> None:
    lock = threading.Lock()
    reads = OwnerReads(lock)
    assert reads.read(lock.locked) is True
    assert (reads.served, reads.fallbacks) == (0, 0)
