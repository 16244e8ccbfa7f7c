"""Worker processes, in one place: how they start, that they die with their parent, their memory.

Every stage that spreads work over processes (landing, validation, release shards) takes its
pool from `process_pool`: forked while the parent runs no other thread (fast: nothing to
import again), spawned otherwise; each worker asks the kernel to kill it when its parent dies,
so a SIGKILLed command never leaves workers behind that go on writing.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1


def _load_libc():
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc (macOS, musl): no prctl, no malloc_trim
        return None


LIBC = _load_libc()


def mp_context(
    fork_ok: bool = True,
) -> multiprocessing.context.ForkContext | multiprocessing.context.SpawnContext:
    """Fork when this process runs no other thread (forking a threaded process is unsafe).

    `fork_ok=False` for callers whose native libraries may hold threads Python cannot see
    (DuckDB, pyiceberg's I/O pools): their workers start from a clean interpreter.
    """
    if fork_ok and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    if LIBC is not None:
        LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_gone():  # the parent died before prctl took effect
        raise SystemExit(1)


def _init(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent()
    from visitshare.db import forget_engines

    forget_engines()  # a forked worker must not share the parent's database connections
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    fork_ok: bool = True,
) -> ProcessPoolExecutor:
    """A pool of `workers` processes that die with this one (use as a context manager)."""
    return ProcessPoolExecutor(
        workers,
        mp_context=mp_context(fork_ok),
        initializer=_init,
        initargs=(initializer, initargs),
    )


def parent_gone() -> bool:
    """True in a multiprocessing child whose parent has exited."""
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB; 0 where /proc is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def release_memory() -> None:
    """Give freed memory back to the OS (Arrow's pool and glibc keep freed blocks for reuse)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if LIBC is not None:
        LIBC.malloc_trim(0)
