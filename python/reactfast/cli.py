"""The ``reactfast`` command line."""

from __future__ import annotations

import argparse
import sys


def _cmd_env(args) -> int:
    from reactfast.env_report import report

    print(report())
    return 0


def _cmd_demo(args) -> int:
    from reactfast.demo import run_demo

    run_demo(out=args.out, sessions=args.sessions, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reactfast", description=__doc__.strip() if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", help="versions, compiled backends, devices, Triton interpreter mode")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("demo", help="the whole job on built-in synthetic data")
    p.add_argument("--out", default="reactfast_out/demo", help="folder for the data, results and plots")
    p.add_argument("--sessions", type=int, default=24, help="synthetic dyadic sessions (default 24)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
