"""``python -m sls_beam.emulator``: serve the emulator until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading

from sls_beam.emulator import Emulator, FaultPlan
from sls_beam.emulator.server import IDLE_TIMEOUT_SECS


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
    )
    for name in args.logstore:
        project, _, logstore = name.partition("/")
        emulator.create_logstore(project, logstore)
    print(emulator.start(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()


def _pair(flag: str, form: str):
    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition(":")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"{flag} must be {form}")
        return key, value

    return parse


if __name__ == "__main__":
    main()
