"""``python -m sls_beam.emulator``: serve the emulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import ssl
import threading

from sls_beam.emulator import Emulator, FaultPlan
from sls_beam.emulator.server import _LOGSTORE, _PROJECT, IDLE_TIMEOUT_SECS
from sls_beam.emulator.tls import make_self_signed_certificate

#: The CLI keeps this many logs of each logstore in memory (about 1.1 KB each).
DEFAULT_MEMORY_LOGS = 100_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sls_beam.emulator", description="Local SLS web-tracking emulator."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback)"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    parser.add_argument("--data-dir", help="keep logs in DIR/{project}/{logstore}.jsonl")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="404 for projects/logstores not declared with --logstore",
    )
    parser.add_argument(
        "--logstore",
        action="append",
        default=[],
        metavar="PROJECT/LOGSTORE",
        type=_logstore_name,
        help="declare a logstore (repeatable)",
    )
    parser.add_argument(
        "--strict-keys",
        action="store_true",
        help="refuse keys other than letters, digits and _ (the documented rule)",
    )
    parser.add_argument(
        "--no-retain",
        action="store_true",
        help="do not keep logs in memory (long benchmarks); counters still count",
    )
    parser.add_argument(
        "--memory-logs",
        type=int,
        default=DEFAULT_MEMORY_LOGS,
        metavar="N",
        help="keep the newest N logs of each logstore in memory, for GET /_emulator/logs "
        f"(default {DEFAULT_MEMORY_LOGS:,}: memory stays bounded); --data-dir keeps all of them",
    )
    parser.add_argument(
        "--default-project",
        metavar="NAME",
        help="the project of requests whose Host names none (an address, as the web SDKs "
        "send to a custom host such as http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a self-signed certificate made at start (for 127.0.0.1, "
        "localhost, *.localhost and *.sls.localhost: give the web SDKs host "
        "sls.localhost:PORT); its path is printed, for verify= or NODE_EXTRA_CA_CERTS",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--trust-logs", action="store_true", help="skip per-log key/value checks (benchmarks)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument(
        "--idle-timeout-secs",
        type=float,
        default=IDLE_TIMEOUT_SECS,
        help="close connections idle this long; bodies must arrive within it "
        f"(default {IDLE_TIMEOUT_SECS:g})",
    )
    parser.add_argument(
        "--access-key",
        action="append",
        default=[],
        type=_pair("--access-key", "AKID:SECRET"),
        metavar="AKID:SECRET",
        help="take signed writes (v1 and v4) made with this AccessKey (repeatable)",
    )
    parser.add_argument(
        "--sts-token",
        action="append",
        default=[],
        type=_pair("--sts-token", "AKID:TOKEN"),
        metavar="AKID:TOKEN",
        help="signed writes of AKID must carry this STS token (repeatable)",
    )
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    tls, certificate = None, args.tls_cert
    if args.tls or args.tls_cert:
        if not args.tls_cert:
            certificate, key = make_self_signed_certificate()
        else:
            key = args.tls_key
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certificate, key)

    emulator = Emulator(
        args.host,
        args.port,
        strict=args.strict,
        strict_keys=args.strict_keys,
        trust_logs=args.trust_logs,
        data_dir=args.data_dir,
        retain_logs=not args.no_retain,
        faults=FaultPlan(latency_secs=args.latency_ms / 1000),
        idle_timeout_secs=args.idle_timeout_secs,
        access_keys=dict(args.access_key),
        sts_tokens=dict(args.sts_token),
        default_project=args.default_project,
        memory_logs=args.memory_logs or None,
        tls=tls,
    )
    for project, logstore in args.logstore:
        emulator.create_logstore(project, logstore)
    print(emulator.start(), flush=True)
    if tls:
        print(f"TLS certificate: {certificate} (for verify= or NODE_EXTRA_CA_CERTS)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()


def _logstore_name(text: str) -> tuple[str, str]:
    project, sep, logstore = text.partition("/")
    if not sep or not _PROJECT.fullmatch(project) or not _LOGSTORE.fullmatch(logstore):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give PROJECT/LOGSTORE (project [a-z0-9-], logstore [a-z0-9_-], "
            "3-63 characters, a letter or digit at both ends)"
        )
    return project, logstore


def _pair(flag: str, form: str):
    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition(":")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"{flag} must be {form}")
        return key, value

    return parse


if __name__ == "__main__":
    main()
