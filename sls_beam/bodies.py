"""Request bodies made off the caller's thread: a batch's pieces joined and compressed.

On a Python helper thread (:class:`ThreadBodies`), each batch takes the interpreter lock
from the caller's thread: when the batch wakes the helper, after the join (a body over
1 MiB is joined without the lock) and after compressing; each time the caller's thread
waits for what the helper runs and for the hand-over. Where the package was built with
``sls_beam/_bodies.c``, lz4 bodies (the default) are made by a thread that never holds
the lock (:class:`Lz4Bodies`): the same bytes, written by the lz4 package's own functions
called as ``lz4.block.compress`` calls them. Deflate and uncompressed bodies stay on a
Python thread. ``python -m benchmarks.bodies`` measures the two side by side.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import lz4.block

from sls_beam import accelerated
from sls_beam.wire import EncodedRequest, LogGroup, body_parts, encode_pieces, request_of


class PendingBody(Protocol):
    """A request whose body is being made."""

    def done(self) -> bool:
        """Whether :meth:`result` returns without waiting."""

    def result(self) -> EncodedRequest:
        """The request, once its body is made (waiting for it if need be)."""


class ThreadBodies:
    """Bodies made on a Python helper thread, in submission order (any compression)."""

    def __init__(self, compression: str):
        self._compression = compression
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sls-compress")

    def submit(self, group: LogGroup, pieces: Sequence[bytes], log_count: int) -> Future:
        return self._executor.submit(encode_pieces, group, pieces, log_count, self._compression)

    def close(self) -> None:
        """Make no more bodies (those not started are cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Lz4Body:
    __slots__ = ("_job", "_log_count")

    def __init__(self, job, log_count: int):
        self._job = job
        self._log_count = log_count

    def done(self) -> bool:
        return self._job.done()

    def result(self) -> EncodedRequest:
        raw_size, body = self._job.result()
        return request_of(body, raw_size, self._log_count, "lz4")


class Lz4Bodies:
    """lz4 bodies made, in submission order, by a thread that never holds the interpreter
    lock (``sls_beam/_bodies.c``); see :func:`body_maker`."""

    def __init__(self, worker):
        self._worker = worker
        #: The thread that makes the bodies (its CPU time is what compressing costs).
        self.thread = threading.Thread(target=worker.run, name="sls-lz4", daemon=True)
        self.thread.start()

    def submit(self, group: LogGroup, pieces: Sequence[bytes], log_count: int) -> _Lz4Body:
        return _Lz4Body(self._worker.submit(tuple(body_parts(group, pieces))), log_count)

    def close(self) -> None:
        """Make no more bodies (those not started are cancelled); the thread ends."""
        self._worker.close()


#: The lz4 package's functions the C worker calls, in the order it takes them.
_LZ4_FUNCTIONS = (
    "LZ4_compressBound",
    "LZ4_createStream",
    "LZ4_resetStream",
    "LZ4_compress_fast_continue",
    "LZ4_freeStream",
)


def _lz4_addresses() -> tuple[int, ...] | None:
    """Where the lz4 package's extension has the functions the C worker calls (its wheels
    name them), else ``None``."""
    try:
        library = ctypes.CDLL(lz4.block._block.__file__)
        functions = [getattr(library, name) for name in _LZ4_FUNCTIONS]
    except (AttributeError, OSError):
        return None
    return tuple(ctypes.cast(function, ctypes.c_void_p).value for function in functions)


_SAMPLE = b'{"__logs__":[' + b",".join(b'{"n":"%d","msg":"hello"}' % i for i in range(64)) + b"]}"


def _checks_out(addresses: tuple[int, ...]) -> bool:
    """Whether a C worker bound to ``addresses`` compresses a sample to the bytes
    ``lz4.block.compress`` gives."""
    worker = accelerated.bodies.Lz4Worker(addresses)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        made = worker.submit((_SAMPLE,)).result()
    finally:
        worker.close()
        thread.join()
    return made == (len(_SAMPLE), lz4.block.compress(_SAMPLE, store_size=False))


@functools.cache
def _lz4_functions() -> tuple[int, ...] | None:
    """The lz4 package's functions for the C worker, where it is built and they check
    out (found and checked once a process), else ``None``."""
    if accelerated.bodies is None:
        return None
    addresses = _lz4_addresses()
    return addresses if addresses is not None and _checks_out(addresses) else None


def body_maker(compression: str) -> ThreadBodies | Lz4Bodies:
    """What makes request bodies for ``compression``: the C worker for lz4 where it may
    be used (see :func:`_lz4_functions`), else a Python thread."""
    functions = _lz4_functions() if compression == "lz4" else None
    if functions is not None:
        return Lz4Bodies(accelerated.bodies.Lz4Worker(functions))
    return ThreadBodies(compression)
