"""A self-signed certificate for the emulator's ``--tls``: loopback names only."""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from pathlib import Path


def make_self_signed_certificate(folder: str | None = None) -> tuple[str, str]:
    """Write a new certificate (and its key) for ``127.0.0.1``, ``::1``, ``localhost``,
    ``*.localhost`` and ``*.sls.localhost``; return their paths. The web SDKs write to
    ``https://{project}.{host}``: with ``host`` ``sls.localhost:PORT`` that name is
    ``{project}.sls.localhost``, which browsers resolve to loopback and every TLS client
    matches (some refuse a wildcard right under a top-level name such as ``*.localhost``).

    The certificate is its own CA: trust it with ``verify=PATH`` (requests) or
    ``NODE_EXTRA_CA_CERTS=PATH`` (Node). It is valid for 30 days.
    """
    try:  # apache-beam's dependency; imported here so that plain HTTP needs nothing
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as e:  # pragma: no cover - installed with apache-beam
        raise SystemExit("--tls needs the cryptography package: pip install cryptography") from e
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sls-beam emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("localhost"),
        x509.DNSName("*.localhost"),
        x509.DNSName("sls.localhost"),
        x509.DNSName("*.sls.localhost"),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    where = Path(folder or tempfile.mkdtemp(prefix="sls-emulator-tls-"))
    cert_path, key_path = where / "cert.pem", where / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)
