"""How the emulator reads a PutWebTracking request: the server's side of the protocol.

Written apart from the connector's encoder on purpose (stdlib ``json``, its
own rules), so that the two implementations check each other in tests. An
emulator told to trust the logs (benchmarks) parses with ``orjson``, which
takes ~30 % less CPU from the cores it shares with the pipeline.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from itertools import chain

import lz4.block
import orjson

API_VERSION = "0.6.0"
MAX_BODY_BYTES = 10 * 1024 * 1024  # 413 PostBodyTooLarge above this (compressed or not)
MAX_RAW_BYTES = 3 * 1024 * 1024  # uncompressed JSON per request
MAX_LOGS = 4096
MAX_KEY_BYTES = 128
MAX_VALUE_BYTES = 1024 * 1024
MAX_SHORT_FIELD_BYTES = 128  # topic, source, tag keys and values
MAX_GET_URL_BYTES = 16 * 1024
RESERVED = {
    "__topic__",
    "__source__",
    "__partition_time__",
    "__extract_others__",
    "_extract_others_",
    "__raw__",
    "__raw_log__",
}


class Rejection(Exception):
    """An answer other than 200: HTTP status, errorCode and errorMessage."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def bad_body(message: str) -> Rejection:
    return Rejection(400, "PostBodyInvalid", message)


@dataclass
class LogGroupPayload:
    """A decoded, validated request: what the service stores."""

    topic: str
    source: str
    tags: dict[str, str]
    logs: list[dict[str, str]] = field(default_factory=list)
    raw_bytes: int = 0


def check_api_version(header: str | None, query: str | None) -> None:
    version = header if header is not None else query
    if version is None:
        raise Rejection(400, "MissingAPIVersion", "x-log-apiversion is required")
    if version != API_VERSION:
        raise Rejection(400, "InvalidAPIVersion", f"unsupported api version: {version[:32]}")


def decompress(body: bytes, compress_type: str | None, raw_size_header: str | None) -> bytes:
    """Return the raw JSON bytes, checking the raw-size header on the way.

    Never inflates past the declared (and capped) raw size, so a small body
    cannot expand into a large allocation.
    """
    declared = None
    if raw_size_header is not None:
        if not raw_size_header.strip().isdigit():
            raise Rejection(400, "InvalidBodyRawSize", "x-log-bodyrawsize must be an integer")
        declared = int(raw_size_header)
        if declared > MAX_RAW_BYTES:
            raise Rejection(
                413, "PostBodyTooLarge", f"raw body size {declared} exceeds {MAX_RAW_BYTES}"
            )
    if compress_type in (None, ""):
        # Like the service, x-log-bodyrawsize is not checked against an uncompressed
        # body: official web clients send the JavaScript string length there.
        if len(body) > MAX_RAW_BYTES:
            raise Rejection(
                413, "PostBodyTooLarge", f"raw body size {len(body)} exceeds {MAX_RAW_BYTES}"
            )
        return body
    if compress_type not in ("lz4", "deflate"):
        raise Rejection(
            400, "InvalidCompressType", f"unsupported compress type: {compress_type[:32]}"
        )
    if declared is None:
        raise Rejection(
            400,
            "MissingBodyRawSize",
            "x-log-bodyrawsize does not exist in header when it is necessary",
        )
    if compress_type == "lz4":
        try:
            raw = lz4.block.decompress(body, uncompressed_size=declared)
        except Exception:  # lz4 raises LZ4BlockError, or others for a zero size
            raise Rejection(400, "PostBodyUncompressError", "post body uncompressed fail") from None
    else:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(body, declared + 1)
        except zlib.error:
            raise Rejection(400, "PostBodyUncompressError", "post body uncompressed fail") from None
        if len(raw) <= declared and not inflater.eof:
            raise Rejection(400, "PostBodyUncompressError", "post body uncompressed fail")
    if len(raw) != declared:
        raise Rejection(
            400, "InvalidBodyRawSize", f"x-log-bodyrawsize {declared} != uncompressed size"
        )
    return raw


def _utf8_len(name: str, text: str) -> int:
    """UTF-8 length of ``text``; a lone surrogate (a ``\\ud800`` escape) is refused."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad_body(f"{name} is not valid UTF-8 (a lone surrogate escape)") from None


def _short_field(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise bad_body(f"{name} must be a string")
    if _utf8_len(name, value) > MAX_SHORT_FIELD_BYTES:
        raise bad_body(f"{name} is longer than {MAX_SHORT_FIELD_BYTES} bytes")
    return value


_STRICT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_key(key: str, strict_keys: bool = False) -> None:
    """The key rules; ``strict_keys`` adds the documented character rule
    (letters, digits and ``_``, not starting with a digit)."""
    if strict_keys and not _STRICT_KEY.fullmatch(key):
        raise Rejection(400, "InvalidKey", f"key {key[:64]!r}: only letters, digits and _")
    if not key:
        raise Rejection(400, "InvalidKey", "empty key")
    if _utf8_len("a key", key) > MAX_KEY_BYTES:
        raise Rejection(400, "InvalidKey", f"key longer than {MAX_KEY_BYTES} bytes")
    if key in RESERVED or key.startswith("__tag__:"):
        raise Rejection(400, "InvalidKey", f"reserved key: {key[:64]}")


class LogChecker:
    """Checks a request's logs, remembering keys already found valid.

    A whole request whose logs are all objects with known keys and short
    string values passes in a few C-level set and map operations; any other
    request is checked log by log, which says what is wrong. ``trust`` skips
    the log checks (the body is still decompressed, sized and parsed): for
    benchmarks, where the emulator shares the pipeline's cores.
    """

    def __init__(self, strict_keys: bool = False, trust: bool = False):
        self.strict_keys = strict_keys
        self.trust = trust
        self._valid_keys: set[str] = set()

    def check_all(self, logs: list, escapes_surrogates: bool = True) -> list[dict[str, str]]:
        """The logs, checked; ``escapes_surrogates``: the body may hold a surrogate
        escape, so the values are checked one by one for a lone one."""
        if self.trust:  # benchmarks: the service's CPU is not the pipeline's to spend
            return logs
        if (
            not escapes_surrogates
            and all(type(log) is dict for log in logs)
            and self._valid_keys.issuperset(chain.from_iterable(logs))
        ):
            values = list(chain.from_iterable(map(dict.values, logs)))
            if {str}.issuperset(map(type, values)) and max(map(len, values), default=0) <= (
                MAX_VALUE_BYTES // 4
            ):
                return logs
        for log in logs:
            check_log(log, self.strict_keys)
            self._valid_keys.update(k for k in log if k != "__time__")
        return logs


#: A ``\\uD800``-``\\uDFFF`` escape: the only way a JSON body can carry a lone
#: surrogate (raw bytes that are not UTF-8 fail to decode before that).
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def _escapes_a_surrogate(raw: bytes) -> bool:
    """Whether the body may hold a lone surrogate: most bodies have no ``\\u`` escape
    at all (a memchr-fast test), and only those that do are searched."""
    return b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None


def check_log(log: object, strict_keys: bool = False) -> dict[str, str]:
    if not isinstance(log, dict):
        raise bad_body("each log must be a JSON object")
    for key, value in log.items():
        if key == "__time__":
            continue  # replaced by the receive time
        check_key(key, strict_keys)
        if not isinstance(value, str):
            raise bad_body(f"value of {key[:64]} must be a string")
        if _utf8_len(f"value of {key[:64]}", value) > MAX_VALUE_BYTES:
            raise bad_body(f"value of {key[:64]} is longer than {MAX_VALUE_BYTES} bytes")
    return log


def parse_body(raw: bytes, checker: LogChecker | None = None) -> LogGroupPayload:
    """Validate the JSON body; raise :class:`Rejection` for anything the service refuses."""
    checker = checker or LogChecker()
    try:
        payload = orjson.loads(raw) if checker.trust else json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad_body("body is not valid UTF-8 JSON") from None
    except RecursionError:  # a nesting bomb: the client's fault, not the server's
        raise bad_body("body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise bad_body("body must be a JSON object")
    logs = payload.get("__logs__")
    if not isinstance(logs, list) or not logs:
        raise bad_body("__logs__ must be a non-empty array")
    if len(logs) > MAX_LOGS:
        raise bad_body(f"{len(logs)} logs in one request; at most {MAX_LOGS}")
    tags = payload.get("__tags__", {})
    if not isinstance(tags, dict):
        raise bad_body("__tags__ must be an object")
    for key, value in tags.items():
        _short_field("tag key", key)
        _short_field(f"tag {key[:64]}", value)
    return LogGroupPayload(
        topic=_short_field("__topic__", payload.get("__topic__", "")),
        source=_short_field("__source__", payload.get("__source__", "")),
        tags=tags,
        logs=checker.check_all(logs, not checker.trust and _escapes_a_surrogate(raw)),
        raw_bytes=len(raw),
    )


def parse_query_log(params: list[tuple[str, str]]) -> LogGroupPayload:
    """The GET form: one log from the query string (``APIVersion`` already checked)."""
    topic = source = ""
    log: dict[str, str] = {}
    for key, value in params:
        if key == "APIVersion":
            continue
        if key == "__topic__":
            topic = _short_field("__topic__", value)
        elif key == "__source__":
            source = _short_field("__source__", value)
        else:
            log[key] = value
    if not log:
        raise bad_body("no log fields in the query string")
    return LogGroupPayload(topic, source, {}, [check_log(log)])
