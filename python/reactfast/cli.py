"""The ``reactfast`` command line."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_env(args) -> int:
    from reactfast.env_report import report

    print(report())
    return 0


def _cmd_demo(args) -> int:
    from reactfast.demo import run_demo

    run_demo(out=args.out, sessions=args.sessions, seed=args.seed)
    return 0


def _cmd_evaluate(args) -> int:
    import time

    from reactfast import metrics
    from reactfast.metrics.io import format_table, load_array, save_json

    pred = load_array(args.pred, args.key, name="pred")
    if pred.ndim != 4:
        raise SystemExit(f"reactfast evaluate: pred must have shape (N, S, T, 25), got {pred.shape}")
    if args.data:
        from reactfast.data import ReactDataset

        ds = ReactDataset(args.data, args.split, frames=pred.shape[2], modalities=("emotion",))
        listener_gt = ds.stack("listener", "emotion").numpy()
        speaker = ds.stack("speaker", "emotion").numpy()
        appropriate = ds.appropriate
    elif args.listener_gt and args.speaker and args.appropriate:
        listener_gt = load_array(args.listener_gt, name="listener_gt")
        speaker = load_array(args.speaker, name="speaker")
        appropriate = load_array(args.appropriate, name="appropriate")
    else:
        raise SystemExit("reactfast evaluate: give --data ROOT (with --split), or all of --listener-gt, "
                         "--speaker and --appropriate")
    start = time.perf_counter()
    scores = metrics.evaluate(pred, listener_gt, speaker, appropriate, progress=not args.no_progress,
                              frsyn_all_samples=args.frsyn_all_samples, backend=args.backend)
    elapsed = time.perf_counter() - start
    print(format_table({"prediction": scores}))
    print(f"(N = {pred.shape[0]}, S = {pred.shape[1]}, T = {pred.shape[2]}; {elapsed:.1f} s)")
    out = args.out or os.path.splitext(args.pred)[0] + ".metrics.json"
    save_json(out, {"metrics": scores, "pred": os.path.abspath(args.pred), "shape": list(pred.shape),
                    "frsyn_all_samples": args.frsyn_all_samples, "seconds": elapsed})
    print(f"wrote {out}")
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

    p = sub.add_parser("evaluate", help="the REACT metric suite on generated reactions (N, S, T, 25)")
    p.add_argument("pred", help="generated listener emotion: .npy, .npz or .pt of shape (N, S, T, 25)")
    p.add_argument("--key", help="array name inside a .npz / key inside a .pt dict (default 'pred')")
    p.add_argument("--data", help="the challenge's data folder (split csv, neighbour matrix, Emotion/...)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    p.add_argument("--listener-gt", help="instead of --data: real listener emotion (N, T, 25)")
    p.add_argument("--speaker", help="instead of --data: speaker emotion (N, T, 25)")
    p.add_argument("--appropriate", help="instead of --data: neighbour matrix (N, N) of 0/1")
    p.add_argument("--out", help="JSON file for the results (default: next to pred)")
    p.add_argument("--frsyn-all-samples", action="store_true",
                   help="FRSyn over every sample (corrected variant; official: first sample only)")
    p.add_argument("--backend", choices=("cpp", "cuda", "reference"), help="force a kernel backend")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
