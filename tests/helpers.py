"""What tests share that is not a fixture: names, and decoding a body the service's way."""

from __future__ import annotations

import json
import zlib

import lz4.block

PROJECT = "test-project"
LOGSTORE = "test-logstore"


def decode_body(body: bytes, headers) -> dict:
    """Decode a request body the way the service does, independently of sls_beam.wire."""
    raw_size = int(headers["x-log-bodyrawsize"])
    kind = headers.get("x-log-compresstype")
    if kind == "lz4":
        raw = lz4.block.decompress(body, uncompressed_size=raw_size)
    elif kind == "deflate":
        raw = zlib.decompress(body)
    else:
        raw = body
    assert len(raw) == raw_size
    return json.loads(raw.decode("utf-8"))
