"""The emulator's check of signed requests: SLS signatures v1 and v4, written apart from
the connector's signer (``sls_beam.signing``), so that each checks the other.

A signed request carries ``Authorization: LOG {id}:{base64 HMAC-SHA1}`` (v1)
or ``Authorization: SLS4-HMAC-SHA256 Credential={id}/{date}/{region}/sls/
aliyun_v4_request,Signature={hex}`` (v4), its body's ``Content-MD5`` (v1) or
``x-log-content-sha256`` (v4), and its time in ``Date``/``x-log-date``. What
is refused, as the service refuses it:

- 401 ``InvalidAccessKeyId``: an AccessKey id the emulator does not know;
- 401 ``InvalidSecurityToken``: a key declared with an STS token, sent without
  it or with another;
- 401 ``SignatureNotMatch``: a signature made with another secret (or over
  other headers, path or body);
- 400 ``RequestTimeExpired``: a time more than 15 minutes from the emulator's
  clock (the answer's ``Date`` has the emulator's time);
- 400 ``InvalidDateFormat``, ``InvalidContentMD5``, ``InvalidContentSha256``,
  ``InvalidAuthorization``: a header that is missing or malformed.
"""

from __future__ import annotations

import base64
import calendar
import email.utils
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from sls_beam.emulator.protocol import Rejection

#: The service refuses a request whose time is further than this from its own (seconds).
MAX_CLOCK_SKEW_SECS = 15 * 60
_V1 = re.compile(r"LOG ([^:\s]+):(\S+)")
_V4 = re.compile(
    r"SLS4-HMAC-SHA256 Credential=([^/\s]+)/(\d{8})/([a-z0-9-]+)/sls/aliyun_v4_request,"
    r"\s*Signature=([0-9a-f]{64})"
)
_V4_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


class Verifier:
    """Checks the signature, key, token, time and body hash of signed requests.

    Args:
      access_keys: AccessKey id → secret.
      sts_tokens: AccessKey id → the STS token its requests must carry.
      clock: the emulator's Unix time.
    """

    def __init__(
        self,
        access_keys: Mapping[str, str] | None = None,
        sts_tokens: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._secrets = dict(access_keys or {})
        self._tokens = dict(sts_tokens or {})
        self._clock = clock

    def verify(self, path: str, query: str, headers, body: bytes) -> None:
        """Raise :class:`Rejection` unless the request is signed by a known key.

        ``headers``: the request's headers (case-insensitive ``get``, ``items``).
        """
        authorization = (headers.get("Authorization") or "").strip()
        v1, v4 = _V1.fullmatch(authorization), _V4.fullmatch(authorization)
        if not v1 and not v4:
            raise Rejection(
                400, "InvalidAuthorization", "Authorization must be LOG id:sig or SLS4-HMAC-SHA256"
            )
        key_id = (v1 or v4).group(1)
        secret = self._secrets.get(key_id)
        if secret is None:
            raise Rejection(401, "InvalidAccessKeyId", f"AccessKeyId {key_id[:64]} is not found")
        token = self._tokens.get(key_id)
        if token is not None and headers.get("x-acs-security-token") != token:
            raise Rejection(401, "InvalidSecurityToken", "the security token is wrong or expired")
        fields = [(name.lower(), value) for name, value in headers.items()]
        if v1:
            self._check_time(_rfc1123(headers.get("Date") or headers.get("x-log-date")))
            if headers.get("Content-MD5") != hashlib.md5(body).hexdigest().upper():
                raise Rejection(400, "InvalidContentMD5", "Content-MD5 is not the body's MD5")
            expected = _v1(secret, path, query, headers, fields)
            given = v1.group(2)
        else:
            stamp = headers.get("x-log-date") or ""
            self._check_time(_v4_time(stamp))
            if stamp[:8] != v4.group(2):
                raise Rejection(401, "SignatureNotMatch", "the scope's date is not x-log-date's")
            if headers.get("x-log-content-sha256") != hashlib.sha256(body).hexdigest():
                raise Rejection(
                    400, "InvalidContentSha256", "x-log-content-sha256 is not the body's SHA-256"
                )
            expected = _v4(secret, path, query, fields, stamp, v4.group(3))
            given = v4.group(4)
        if not hmac.compare_digest(expected, given):
            raise Rejection(
                401, "SignatureNotMatch", "the request signature does not match (check the secret)"
            )

    def _check_time(self, sent: float) -> None:
        now = self._clock()
        if abs(now - sent) > MAX_CLOCK_SKEW_SECS:
            raise Rejection(
                400,
                "RequestTimeExpired",
                f"request time {email.utils.formatdate(sent, usegmt=True)} is more than "
                f"15 minutes from the server time {email.utils.formatdate(now, usegmt=True)}",
            )


def _rfc1123(value: str | None) -> float:
    parsed = email.utils.parsedate_tz(value or "")
    if not parsed:
        raise Rejection(400, "InvalidDateFormat", "Date / x-log-date must be an RFC 1123 date")
    return float(email.utils.mktime_tz(parsed))


def _v4_time(stamp: str) -> float:
    match = _V4_DATE.fullmatch(stamp)
    if not match:
        raise Rejection(400, "InvalidDateFormat", "x-log-date must be YYYYMMDDTHHMMSSZ")
    return float(calendar.timegm(tuple(map(int, match.groups())) + (0, 0, 0)))


def _canonical_query(query: str) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(query, keep_blank_values=True)))


def _v1(secret: str, path: str, query: str, headers, fields: list[tuple[str, str]]) -> str:
    """HMAC-SHA1 over: verb, Content-MD5, Content-Type, date, the x-log-*/x-acs-*
    headers but x-log-date (sorted, ``name:value``), the path and sorted query."""
    date = headers.get("Date") or headers.get("x-log-date")
    logged = sorted(
        (name, value)
        for name, value in fields
        if (name.startswith("x-log-") or name.startswith("x-acs-")) and name != "x-log-date"
    )
    lines = ["POST", headers.get("Content-MD5") or "", headers.get("Content-Type") or "", date]
    resource = path + ("?" + _canonical_query(query) if query else "")
    text = "\n".join(lines) + "\n" + "".join(f"{n}:{v}\n" for n, v in logged) + resource
    return base64.b64encode(
        hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    ).decode()


def _v4(
    secret: str, path: str, query: str, fields: list[tuple[str, str]], stamp: str, region: str
) -> str:
    """SLS4-HMAC-SHA256 over the canonical request (content-type, host and the
    x-log-*/x-acs-* headers signed), with a key derived for the day and region."""
    signed = sorted(
        (name, value.strip())
        for name, value in fields
        if name in ("content-type", "host") or name.startswith(("x-log-", "x-acs-"))
    )
    canonical = "\n".join(
        [
            "POST",
            path,
            _canonical_query(query),
            "".join(f"{n}:{v}\n" for n, v in signed),
            ";".join(n for n, _ in signed),
            dict(signed).get("x-log-content-sha256", ""),
        ]
    )
    scope = f"{stamp[:8]}/{region}/sls/aliyun_v4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    text = f"SLS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    key = hmac.new(("aliyun_v4" + secret).encode(), stamp[:8].encode(), hashlib.sha256).digest()
    for part in (region, "sls", "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
