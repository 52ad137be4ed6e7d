"""Request signatures of the SLS API, versions 1 (HMAC-SHA1) and 4 (SLS4-HMAC-SHA256).

Pure functions of their arguments (no I/O, no clock): the client passes the
time, corrected for the server's clock. What a signed web-tracking request
carries (``../shared/spec/sls-signature.md``)::

    POST /logstores/{logstore}                       (no /track)
    Content-MD5: <MD5 of the body as sent, upper-case hex>        v1
    x-log-content-sha256: <SHA-256 of the body as sent, hex>      v4
    x-log-date: <RFC 1123 date (v1, also sent as Date) | YYYYMMDDTHHMMSSZ (v4)>
    x-log-signaturemethod: hmac-sha1                              v1
    x-acs-security-token: <STS token>                             with temporary keys
    Authorization: LOG {id}:{base64 HMAC-SHA1}                    v1
    Authorization: SLS4-HMAC-SHA256 Credential={id}/{scope},Signature={hex}   v4
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import time
from collections.abc import Mapping

from sls_beam.credentials import Credentials, CredentialSource

SIGNATURE_VERSIONS = ("v1", "v4")
DEFAULT_SIGNATURE_VERSION = "v1"
_V4_ALGORITHM = "SLS4-HMAC-SHA256"


def signing_headers(
    *,
    path: str,
    host: str,
    body: bytes,
    headers: Mapping[str, str],
    credentials: Credentials,
    version: str,
    region: str | None,
    now: float,
) -> dict[str, str]:
    """The headers that sign ``POST path`` with ``body`` and ``headers`` (the
    protocol headers, ``Content-Type`` among them), at Unix time ``now``.

    Args:
      path: the resource, e.g. ``/logstores/web``.
      host: the ``Host`` header sent (v4 signs it).
      region: the region of the endpoint (v4 only), e.g. ``cn-hangzhou``.
    """
    added: dict[str, str] = {}
    if credentials.security_token:
        added["x-acs-security-token"] = credentials.security_token
    if version == "v1":
        added["Content-MD5"] = hashlib.md5(body).hexdigest().upper()
        added["x-log-signaturemethod"] = "hmac-sha1"
        date = email.utils.formatdate(now, usegmt=True)
        signature = _v1_signature({**headers, **added}, path, date, credentials)
        added.update(
            {
                "Date": date,
                "x-log-date": date,
                "Authorization": f"LOG {credentials.access_key_id}:{signature}",
            }
        )
        return added
    check_version(version)
    if not region:
        raise ValueError("signature_version='v4' needs a region")
    added["x-log-content-sha256"] = hashlib.sha256(body).hexdigest()
    added["x-log-date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    scope, signature = _v4_signature({**headers, **added, "Host": host}, path, region, credentials)
    added["Authorization"] = (
        f"{_V4_ALGORITHM} Credential={credentials.access_key_id}/{scope},Signature={signature}"
    )
    return added


def check_version(version: str) -> None:
    """Raise ValueError unless ``version`` is one this module signs with."""
    if version not in SIGNATURE_VERSIONS:
        raise ValueError(f"signature_version must be one of {SIGNATURE_VERSIONS}, not {version!r}")


def _v1_signature(
    headers: Mapping[str, str], path: str, date: str, credentials: Credentials
) -> str:
    lower = {name.lower(): value for name, value in headers.items()}
    canonical = "".join(
        f"{name}:{value}\n"
        for name, value in sorted(lower.items())
        if name.startswith(("x-log-", "x-acs-")) and name != "x-log-date"
    )
    text = "\n".join(
        (
            "POST",
            lower.get("content-md5", ""),
            lower.get("content-type", ""),
            date,
            canonical + path,
        )
    )
    digest = hmac.new(credentials.access_key_secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _v4_signature(
    headers: Mapping[str, str], path: str, region: str, credentials: Credentials
) -> tuple[str, str]:
    lower = {name.lower(): value.strip() for name, value in headers.items()}
    signed = sorted(
        name
        for name in lower
        if name in ("content-type", "host") or name.startswith(("x-log-", "x-acs-"))
    )
    canonical_headers = "".join(f"{name}:{lower[name]}\n" for name in signed)
    content_sha256 = lower["x-log-content-sha256"]
    request = "\n".join(("POST", path, "", canonical_headers, ";".join(signed), content_sha256))
    stamp = lower["x-log-date"]
    scope = f"{stamp[:8]}/{region}/sls/aliyun_v4_request"
    text = "\n".join((_V4_ALGORITHM, stamp, scope, hashlib.sha256(request.encode()).hexdigest()))
    key = ("aliyun_v4" + credentials.access_key_secret).encode()
    for part in (stamp[:8], region, "sls", "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return scope, hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


#: 401 codes and what they most likely mean for a signed request.
_UNAUTHORIZED_HINTS = {
    "SignatureNotMatch": "the AccessKey secret is probably wrong (the signature does not match)",
    "InvalidAccessKeyId": "the AccessKey id is unknown or disabled",
    "Unauthorized": "the AccessKey may lack the RAM permission log:PostLogStoreLogs here",
}
_TOKEN_HINT = "the STS token is expired or wrong (the credentials were asked for again once)"
#: Answers that say the request's time is too far from the server's.
_CLOCK_CODES = frozenset({"RequestTimeExpired", "RequestTimeTooSkewed"})


class RequestSigner:
    """Signs each attempt of a request with the current credentials and a clock
    corrected to the server's, and says when a refusal can be fixed by signing again.

    Args:
      source: where the credentials come from.
      version: ``v1`` or ``v4``.
      region: the endpoint's region (v4).
      path, host: the request's path and ``Host`` value.
      clock: Unix time now (tests pass their own).
    """

    def __init__(
        self,
        source: CredentialSource,
        version: str,
        region: str | None,
        path: str,
        host: str,
        clock=time.time,
    ):
        check_version(version)
        self._source = source
        self._version = version
        self._region = region
        self._path = path
        self._host = host
        self._clock = clock
        #: Seconds to add to the local clock to get the server's, learnt from its answers.
        self.clock_offset_secs = 0.0

    def headers(self, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        """``headers`` with those that sign this attempt (``Host`` among them)."""
        signed = signing_headers(
            path=self._path,
            host=self._host,
            body=body,
            headers=headers,
            credentials=self._source.current(),
            version=self._version,
            region=self._region,
            now=self._clock() + self.clock_offset_secs,
        )
        return {**headers, **signed, "Host": self._host}

    def recover(
        self, status: int | None, code: str | None, server_time: float | None, tried: set[str]
    ) -> bool:
        """Whether the refusal can be fixed by signing again now: the clock was off
        (the server's time is learnt from its ``Date``), or temporary credentials (an
        STS token) expired (the provider is asked again). Each fix is tried once a request:
        ``tried`` is the request's record of them."""
        if status == 400 and code in _CLOCK_CODES and server_time is not None:
            if "clock" in tried:
                return False
            tried.add("clock")
            self.clock_offset_secs = server_time - self._clock()
            return True
        if (
            status == 401
            and "credentials" not in tried
            and self._source.refreshable
            and self._source.current().security_token  # temporary: it may have expired
        ):
            tried.add("credentials")
            return self._source.refresh()
        return False

    def hint(self, status: int | None, code: str | None) -> str | None:
        """What a final refusal of a signed request most likely means."""
        if status != 401:
            return None
        if code in _UNAUTHORIZED_HINTS:
            return _UNAUTHORIZED_HINTS[code]
        if "token" in (code or "").lower():
            return _TOKEN_HINT
        return "the credentials were refused (" + "; ".join(_UNAUTHORIZED_HINTS.values()) + ")"
