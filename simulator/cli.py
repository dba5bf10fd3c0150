"""`kiosk-sim`: the simulator's command line.

    kiosk-sim demo                 the whole system live (Ctrl-C stops it)
    kiosk-sim demo --duration 30   ... for 30 seconds, then stop
    kiosk-sim backend --port 8080  only the city-backend emulator
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk-sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="broker + backend + bridge + three virtual kiosks, live")
    demo.add_argument("--state-dir", type=Path, default=Path(".demo"),
                      help="where the demo keeps its files (wiped at start; default .demo)")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--plain", action="store_true",
                      help="one line per answer instead of the live screen")
    demo.add_argument("--seed", type=int, default=2021, help="sample stream seed")
    demo.add_argument("--interval", type=float, default=1.2,
                      help="mean seconds between scans at each kiosk (default 1.2)")
    backend = sub.add_parser("backend", help="run the city-backend emulator alone")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=8080)
    backend.add_argument("--db", default="backend.sqlite3")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from simulator.broker import BrokerError
        from simulator.demo import run_demo
        from simulator.stack import ServiceError

        if args.duration is not None and args.duration <= 0:
            print("kiosk-sim: --duration must be > 0", file=sys.stderr)
            return 2
        try:
            return run_demo(args.state_dir, args.duration, args.plain, args.seed, args.interval)
        except (BrokerError, ServiceError) as e:
            print(f"kiosk-sim: {e}", file=sys.stderr)
            return 1
    if args.command == "backend":
        from simulator import backend

        return int(backend.main(["--host", args.host, "--port", str(args.port), "--db", args.db])
                   or 0)
    return 2


if __name__ == "__main__":
    sys.exit(main())
