"""Request bodies made off the caller's thread: the C worker for lz4 (never holding the
interpreter lock) gives the bytes the Python path gives, in order, and ends cleanly."""

from __future__ import annotations

import os
import resource
import threading

import orjson
import pytest

from sls_beam import accelerated, bodies
from sls_beam.wire import LogGroup, body_parts, encode_pieces
from tests.helpers import decode_body

needs_c = pytest.mark.skipif(accelerated.bodies is None, reason="built without the C worker")

GROUP = LogGroup.of("topic", "web-07", {"env": "prod"})


def typed_pieces(count: int, per_piece: int) -> list[bytes]:
    """Runs of typed logs as the encoder writes them (ints, floats, booleans, None, a
    nested object, non-ASCII text), ``per_piece`` logs a piece."""
    logs = [
        orjson.dumps(
            {
                "status": str(200 + i % 3),
                "latency_ms": str(i / 8),
                "ok": "true" if i % 2 else "false",
                "retry": "null",
                "user": orjson.dumps({"id": i, "tags": ["a", "b"]}).decode(),
                "msg": f"commande n°{i} servie à 客户 {i % 97}",
            }
        )
        for i in range(count)
    ]
    return [b",".join(logs[i : i + per_piece]) for i in range(0, count, per_piece)]


def test_the_c_worker_is_built_where_it_must_be():
    """CI builds it (a compiler is at hand there, see .ci/run): the tests below then run
    rather than skip unnoticed, and the lz4 package's functions are found and check out."""
    if os.environ.get("SLS_BEAM_REQUIRE_SPEEDUPS"):
        assert accelerated.bodies is not None, "sls_beam/_bodies.c was not built"
        assert bodies._lz4_functions() is not None, "the lz4 package's functions"


@needs_c
def test_the_c_worker_is_what_makes_lz4_bodies_and_never_the_others():
    lz4_maker, deflate_maker = bodies.body_maker("lz4"), bodies.body_maker("deflate")
    try:
        assert isinstance(lz4_maker, bodies.Lz4Bodies)
        assert isinstance(deflate_maker, bodies.ThreadBodies)
    finally:
        lz4_maker.close()
        deflate_maker.close()


@needs_c
def test_its_requests_are_those_of_the_python_path_in_submission_order():
    """Many batches at once, from one log to a body over 1 MiB, made by the C worker:
    byte for byte the request ``encode_pieces`` makes, each with its own headers."""
    batches = [
        (count, typed_pieces(count, per)) for count, per in ((1, 1), (7, 3), (500, 8), (8000, 128))
    ]
    maker = bodies.body_maker("lz4")
    try:
        pending = [maker.submit(GROUP, pieces, count) for count, pieces in batches]
        made = [body.result() for body in pending]
    finally:
        maker.close()
    assert made[-1].raw_size > 1024 * 1024
    for (count, pieces), request in zip(batches, made, strict=True):
        assert request == encode_pieces(GROUP, pieces, count, "lz4")
        assert len(decode_body(request.body, request.headers)["__logs__"]) == count


def waits_of_the_callers_thread(maker, bodies_count: int) -> int:
    """How often the caller's thread waited (for the interpreter lock: it does nothing
    else that blocks) while it ran Python until ``bodies_count`` batches of 4,096 typed
    logs were made."""
    pieces = typed_pieces(4096, 128)
    maker.submit(GROUP, pieces, 4096).result()  # the maker's thread is up
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    pending = [maker.submit(GROUP, pieces, 4096) for _ in range(bodies_count)]
    while not all(body.done() for body in pending):
        pass
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before


@needs_c
@pytest.mark.skipif(not hasattr(resource, "RUSAGE_THREAD"), reason="Linux's per-thread counts")
def test_the_callers_thread_never_waits_for_the_lock_while_bodies_are_made():
    """A Python helper thread takes the interpreter lock from the caller's thread for each
    body (to take the batch, and to hand back its body); the C worker never does."""
    python_thread, c_worker = bodies.ThreadBodies("lz4"), bodies.body_maker("lz4")
    try:
        assert waits_of_the_callers_thread(python_thread, 20) >= 10
        assert waits_of_the_callers_thread(c_worker, 20) <= 2
    finally:
        python_thread.close()
        c_worker.close()


@needs_c
def test_closing_cancels_what_is_not_started_and_ends_the_thread():
    big = (os.urandom(1 << 20),) * 8  # 8 MiB of noise a body: each takes a while
    worker = accelerated.bodies.Lz4Worker(bodies._lz4_functions())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    jobs = [worker.submit(big) for _ in range(6)]
    worker.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    ended = []
    for job in jobs:
        assert job.done()
        try:
            raw_size, _ = job.result()
            ended.append(raw_size)
        except RuntimeError as e:
            assert "cancelled" in str(e)
            ended.append("cancelled")
    assert "cancelled" in ended  # the last ones had not started
    assert all(size == 8 << 20 for size in ended if size != "cancelled")
    with pytest.raises(RuntimeError, match="cancelled"):
        worker.submit((b"{}",)).result()  # closed: nothing more is made


@needs_c
def test_a_body_dropped_before_it_is_made_neither_crashes_nor_holds_the_worker():
    worker = accelerated.bodies.Lz4Worker(bodies._lz4_functions())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    big = (os.urandom(1 << 20),) * 8
    try:
        for _ in range(20):
            worker.submit(big)  # dropped at once: cancelled, or waited for while being made
        kept = worker.submit(tuple(body_parts(GROUP, typed_pieces(10, 5))))
        assert kept.result() == (
            len(b"".join(body_parts(GROUP, typed_pieces(10, 5)))),
            encode_pieces(GROUP, typed_pieces(10, 5), 10, "lz4").body,
        )
    finally:
        worker.close()
    thread.join(timeout=60)
    assert not thread.is_alive()


@needs_c
def test_what_is_not_a_tuple_of_bytes_is_refused_by_name():
    worker = accelerated.bodies.Lz4Worker(bodies._lz4_functions())
    try:
        for parts in ([b"a"], (b"a", "b"), (bytearray(b"a"),)):
            with pytest.raises(TypeError, match="tuple of bytes"):
                worker.submit(parts)
    finally:
        worker.close()


def test_without_the_c_worker_lz4_bodies_are_made_on_a_python_thread(monkeypatch):
    monkeypatch.setattr(accelerated, "bodies", None)
    bodies._lz4_functions.cache_clear()
    try:
        maker = bodies.body_maker("lz4")
        try:
            assert isinstance(maker, bodies.ThreadBodies)
            pieces = typed_pieces(20, 4)
            assert maker.submit(GROUP, pieces, 20).result() == encode_pieces(
                GROUP, pieces, 20, "lz4"
            )
        finally:
            maker.close()
    finally:
        bodies._lz4_functions.cache_clear()
