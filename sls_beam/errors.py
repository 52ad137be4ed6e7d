"""Typed errors raised by the wire format and the client, and the excerpts they carry.

Runners move exceptions between processes, so each error pickles to an
equal one: every field, and the message, exactly.
"""

from __future__ import annotations

#: Longest excerpt of server text or log content that an error message may carry.
MAX_EXCERPT_CHARS = 200
#: Longest excerpt of a key in a message (keys are at most 128 bytes when valid).
MAX_KEY_EXCERPT_CHARS = 80


def excerpt(text: str, limit: int = MAX_EXCERPT_CHARS) -> str:
    """Return ``text`` cut to ``limit`` characters, marking the cut.

    Error messages travel into worker logs and dead-letter tables; a log's
    content (which may be large or sensitive) must only ever appear as a
    short excerpt there.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} chars)"


def describe(error: BaseException) -> str:
    """``TypeName: message`` of an exception raised by user code, cut short.

    Never raises itself, even when the exception's own ``__str__`` does.
    """
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - the exception's own code is as untrusted as the rest
        text = "(its message could not be read)"
    return f"{type(error).__name__}: {excerpt(text)}" if text else type(error).__name__


class InvalidLogError(ValueError):
    """A log (or its topic, source or tags) breaks a rule of the service.

    Attributes:
      key: the offending field name (``None`` when the whole log is at fault;
        a key that is not a str, number or bytes is kept as its repr).
      rule: the rule that was broken, in words.
      error_code: a stable code, ``InvalidLog``, for dead-letter records.
    """

    error_code = "InvalidLog"

    def __init__(self, key: object, rule: str):
        # Keys of plain types are kept as they are; any other object as its repr,
        # so that the error always pickles (runners move it between processes).
        plain = key is None or isinstance(key, (str, int, float, bytes))
        self.key = key if plain else key_text(key)
        self.rule = rule
        where = "log" if key is None else f"key {key_text(key)}"
        super().__init__(f"{where}: {rule}")

    def __reduce__(self):
        return (_restored, (type(self), self.__dict__.copy(), self.args))


def key_text(key) -> str:
    """A key as an error message shows it: its repr, cut short (never raising)."""
    try:
        text = repr(str.__str__(key) if isinstance(key, str) else key)
        return excerpt(text, MAX_KEY_EXCERPT_CHARS)
    except Exception:  # noqa: BLE001 - a key's own __repr__ may raise
        return f"<a {type(key).__name__} key>"


class SLSError(Exception):
    """The service (or the network) refused a PutWebTracking request.

    Attributes:
      status: the HTTP status, or ``None`` when no answer arrived (network
        error or timeout).
      error_code: the service's ``errorCode`` (e.g. ``WriteQuotaExceed``), or
        ``RequestError`` / ``RequestTimeout`` for network failures.
      error_message: the service's ``errorMessage``, truncated.
      request_id: the ``x-log-requestid`` of the last answer, if any.
      attempts: how many times the request was sent before giving up.
      throttled_secs: seconds spent backing off because of quota answers.
      hint: what probably went wrong and what to do, when the client can tell.
    """

    def __init__(
        self,
        status: int | None,
        error_code: str,
        error_message: str,
        request_id: str | None = None,
        attempts: int = 1,
        throttled_secs: float = 0.0,
        hint: str | None = None,
    ):
        self.status = status
        self.error_code = error_code
        self.error_message = excerpt(error_message)
        self.request_id = request_id
        self.attempts = attempts
        self.throttled_secs = throttled_secs
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = (
            f"SLS {self.error_code} (HTTP {self.status if self.status is not None else '-'}): "
            f"{self.error_message} [request id {self.request_id or '-'}, "
            f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}]"
        )
        if self.hint:
            text += f" — {self.hint}"
        elif self.status == 401:
            text += (
                " — web tracking is probably disabled for this logstore "
                "(enable it in the logstore's settings) or a project policy denies it"
            )
        return text

    def __reduce__(self):
        # Fields as they are: the constructor would excerpt the message a second time.
        return (_restored, (type(self), self.__dict__.copy(), self.args))


def _restored(cls, fields: dict, args: tuple) -> Exception:
    """An error as it was pickled: the same fields and message, no constructor run."""
    error = cls.__new__(cls)
    error.__dict__.update(fields)
    error.args = args
    return error
