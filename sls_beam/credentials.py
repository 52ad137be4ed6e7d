"""Credentials for signed writes: an AccessKey pair, optionally an STS token, and where
they come from (a value, a provider called on the worker, or the environment).

Secrets never appear in a ``repr``, an error message or display data: a
:class:`Credentials` shows its AccessKey id only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The environment variables of the official Alibaba Cloud credential providers.
ENV_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"
#: Credentials whose ``expiration`` is nearer than this are asked for again (seconds).
REFRESH_BEFORE_EXPIRY_SECS = 300.0


class CredentialsError(ValueError):
    """Credentials could not be had (a provider raised, a variable is missing)."""


@dataclass(frozen=True)
class Credentials:
    """An AccessKey pair, and an STS token when the key is temporary.

    Attributes:
      access_key_id: the AccessKey id (not secret: it names the key).
      access_key_secret: the AccessKey secret (never shown).
      security_token: the STS token of temporary credentials (never shown).
      expiration: when temporary credentials expire (Unix seconds), if known:
        a provider is asked again :data:`REFRESH_BEFORE_EXPIRY_SECS` before.
    """

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    expiration: float | None = None

    def __post_init__(self):
        for name in ("access_key_id", "access_key_secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise CredentialsError(f"Credentials.{name} must be a non-empty str")
        if self.security_token is not None and not isinstance(self.security_token, str):
            raise CredentialsError("Credentials.security_token must be a str or None")

    def __repr__(self) -> str:
        token = ", security_token=<hidden>" if self.security_token else ""
        return (
            f"Credentials(access_key_id={self.access_key_id!r}, access_key_secret=<hidden>{token})"
        )


#: What ``credentials=`` takes: ``None`` (anonymous), a value, a zero-argument
#: provider returning one, or ``"env"`` (the ALIBABA_CLOUD_* variables, read
#: on the worker).
CredentialsSpec = Credentials | Callable[[], Credentials] | str | None


def check_spec(spec: Any) -> None:
    """Raise ValueError (at pipeline construction) for a ``credentials=`` that can never work."""
    if spec is None or isinstance(spec, Credentials) or spec == "env" or callable(spec):
        return
    raise ValueError(
        "credentials must be None (anonymous), a Credentials, a zero-argument callable "
        f'returning one, or "env"; got a {type(spec).__name__}'
    )


def describe_spec(spec: CredentialsSpec) -> str:
    """What the credentials are, for display data and logs: never a secret."""
    if spec is None:
        return "anonymous"
    if isinstance(spec, Credentials):
        return f"AccessKey {spec.access_key_id}" + (
            " with an STS token" if spec.security_token else ""
        )
    if spec == "env":
        return f"from {ENV_ACCESS_KEY_ID} / {ENV_ACCESS_KEY_SECRET} / {ENV_SECURITY_TOKEN}"
    return f"from the provider {getattr(spec, '__qualname__', type(spec).__name__)}"


class CredentialSource:
    """The credentials to sign with now: resolved from a spec, on the worker.

    A provider (or the environment) is asked on first use, again when the
    credentials it gave carry an ``expiration`` that is near, and once more
    when the service says the token expired (:meth:`refresh`). Thread-safe:
    several requests in flight share it.
    """

    def __init__(self, spec: CredentialsSpec, clock: Callable[[], float] = time.time):
        check_spec(spec)
        if spec is None:
            raise ValueError("anonymous writes have no credentials")
        self._spec = spec
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Credentials | None = spec if isinstance(spec, Credentials) else None

    @property
    def refreshable(self) -> bool:
        """Whether asking again may give other credentials (a provider or the environment)."""
        return not isinstance(self._spec, Credentials)

    def current(self) -> Credentials:
        """The credentials to sign with. Raises CredentialsError."""
        with self._lock:
            current = self._current
            if current is None or (
                current.expiration is not None
                and current.expiration - self._clock() < REFRESH_BEFORE_EXPIRY_SECS
                and self.refreshable
            ):
                current = self._current = self._fetch()
            return current

    def refresh(self) -> bool:
        """Ask the provider again (the service said the token expired); whether
        that may help (only a provider or the environment can give new ones)."""
        if not self.refreshable:
            return False
        with self._lock:
            self._current = self._fetch()
        return True

    def _fetch(self) -> Credentials:
        if self._spec == "env":
            return _from_environment()
        try:
            got = self._spec()
        except Exception as e:  # noqa: BLE001 - the user's provider: say what it raised
            raise CredentialsError(
                f"the credentials provider raised {type(e).__name__}"
                " (its message is not shown: it may hold a secret)"
            ) from None
        if not isinstance(got, Credentials):
            raise CredentialsError(
                f"the credentials provider must return Credentials, not {type(got).__name__}"
            )
        return got


def _from_environment() -> Credentials:
    key_id = os.environ.get(ENV_ACCESS_KEY_ID, "")
    secret = os.environ.get(ENV_ACCESS_KEY_SECRET, "")
    missing = [
        name
        for name, value in ((ENV_ACCESS_KEY_ID, key_id), (ENV_ACCESS_KEY_SECRET, secret))
        if not value
    ]
    if missing:
        raise CredentialsError(
            f'credentials="env": {" and ".join(missing)} not set on this worker '
            "(set them in the worker's environment, not in the pipeline's options)"
        )
    return Credentials(key_id, secret, os.environ.get(ENV_SECURITY_TOKEN) or None)
