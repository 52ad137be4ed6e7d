"""Where requests go: SLS project and logstore names, endpoint forms, the URL and Host.

Pure functions of their arguments (no I/O), so a configuration is checked
when a pipeline is built, not when a worker first sends.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_LOGSTORE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]")


def _validate_name(kind: str, name: str, pattern: re.Pattern, characters: str) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(
            f"{kind} {name!r}: must be 3-63 characters of {characters}, "
            "starting and ending with a letter or digit"
        )
    return name


def validate_project(project: str) -> str:
    """Return ``project`` if it is a valid SLS project name, else raise ValueError."""
    return _validate_name("project", project, _PROJECT_RE, "lowercase letters, digits and '-'")


def validate_logstore(logstore: str) -> str:
    """Return ``logstore`` if it is a valid SLS logstore name, else raise ValueError."""
    return _validate_name(
        "logstore", logstore, _LOGSTORE_RE, "lowercase letters, digits, '-' and '_'"
    )


@dataclass(frozen=True)
class Target:
    """Where requests go: the URL to connect to, the ``Host`` header to send (``None``:
    the URL's), and the parts a signature covers: the path and the Host value."""

    url: str
    host: str | None
    path: str = ""
    authority: str = ""


def resolve_target(endpoint: str, project: str, logstore: str, signed: bool = False) -> Target:
    """Work out the request URL for ``endpoint``, ``project`` and ``logstore``
    (``signed``: the signed form's path, ``/logstores/{logstore}``).

    - ``cn-hangzhou.log.aliyuncs.com`` (no scheme): HTTPS to
      ``https://{project}.cn-hangzhou.log.aliyuncs.com``.
    - ``http://…`` or ``https://…``: that scheme, same host rule.
    - An IP address or ``localhost`` (e.g. ``http://127.0.0.1:8080``, an
      emulator or a private gateway): connect there and send
      ``Host: {project}.{address}``, as the service reads the project from
      the Host header. Its scheme must be written out.
    """
    validate_project(project)
    validate_logstore(logstore)
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError("endpoint must be a non-empty string such as cn-hangzhou.log.aliyuncs.com")
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        hostname = urlsplit("//" + endpoint).hostname or ""
        if is_address(hostname):
            # An emulator or a gateway on an address: most likely plain HTTP, and a
            # guessed https:// would fail only after every retry.
            raise ValueError(
                f"endpoint {endpoint!r} has no scheme: write http://{endpoint} for a plain-HTTP "
                f"server such as the emulator, or https://{endpoint} for TLS"
            )
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint {endpoint!r}: scheme must be http or https")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(
            f"endpoint {endpoint!r}: give only [scheme://]host[:port], without path, query or user"
        )
    hostname = parts.hostname or ""
    if not hostname:
        raise ValueError(f"endpoint {endpoint!r}: no host name")
    path = f"/logstores/{logstore}" if signed else f"/logstores/{logstore}/track"
    authority = f"{project}.{parts.netloc}"
    if is_address(hostname):
        return Target(f"{parts.scheme}://{parts.netloc}{path}", authority, path, authority)
    return Target(f"{parts.scheme}://{authority}{path}", None, path, authority)


#: ``{region}[-intranet|-share].log.aliyuncs.com`` (and the ``.com.cn`` form).
_REGIONAL = re.compile(r"([a-z]{2}(?:-[a-z0-9]+)+?)(?:-intranet|-share|-vpc)?\.log\.aliyuncs\.com")


def region_of(endpoint: str) -> str | None:
    """The region of a regional SLS endpoint (``cn-hangzhou.log.aliyuncs.com`` →
    ``cn-hangzhou``), or ``None`` when the endpoint does not say (an address, a gateway)."""
    if not isinstance(endpoint, str):
        return None
    hostname = urlsplit(endpoint if "://" in endpoint else "//" + endpoint.strip()).hostname or ""
    match = _REGIONAL.fullmatch(hostname)
    return match.group(1) if match else None


def is_address(hostname: str) -> bool:
    """Whether ``hostname`` is an IP address or ``localhost`` (no DNS name of a region)."""
    if hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True
