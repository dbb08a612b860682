"""Compile the package's Triton kernels for Hopper (sm_90) on a machine without a GPU.

The interpreter (TRITON_INTERPRET=1) checks what the kernels compute, not whether the GPU compiler
accepts them: it runs the Python body with numpy, so a construct that the compiler rejects, a
shared-memory budget past the chip's, or a register spill goes unseen until a GPU run. This module
lowers each kernel through Triton's real pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin, with the
ptxas Triton ships) for compute capability 9.0, in every block configuration the autotuner may
pick, and reports the shared memory, the Hopper matrix instructions (``wgmma``) and any local
memory (spills) in the PTX.

Run with the interpreter off: ``python -m reactfast.kernels.sm90`` (``--quick``: each kernel's
first configuration in every dtype and its first decode configuration in bf16). Exit status 1 when
a kernel fails to compile, spills, or needs more shared memory than the chip has.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, Iterator, List, Tuple

HOPPER_SMEM = 227 * 1024        # bytes of shared memory a block may use on sm_90
_FLOAT_ARGS = {"scale", "qk_scale", "inv_rp", "clip"}
_PTR = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}


def _signature(fn, constexprs: Dict[str, object], ptr: str, overrides: Dict[str, str]) -> Dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in overrides:
            sig[name] = overrides[name]
        elif name.startswith("p_"):
            sig[name] = ptr
        else:
            sig[name] = "fp32" if name in _FLOAT_ARGS else "i32"
    return sig


def compile_kernel(fn, constexprs: Dict[str, object], dtype: str = "bf16", overrides=None, num_warps: int = 4,
                   num_stages: int = 3) -> Dict[str, object]:
    """Compile one Triton kernel for sm_90; returns shared memory, wgmma count and local-memory uses."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = _signature(fn, constexprs, _PTR[dtype], overrides or {})
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": num_warps, "num_stages": num_stages})
    ptx = kernel.asm.get("ptx", "")
    return {"smem": kernel.metadata.shared, "wgmma": ptx.count("wgmma.mma_async"), "local": ptx.count(".local")}


def _cases(quick: bool) -> Iterator[Tuple[str, object, Dict[str, object], str, Dict[str, str], int, int]]:
    from reactfast.kernels import biased_attention as ba
    from reactfast.kernels import ccc, ddim, frame_diff, tlcc, weight_shift

    ints = {n: "*i32" for n in ("p_q0", "p_kbeg", "p_klen")}
    f32 = {n: "*fp32" for n in ("p_lse", "p_lse2", "p_delta", "p_wacc", "p_wm", "p_wl", "p_slopes")}
    over = {**ints, **f32}
    families = (("attention fwd", ba._fwd_kernel, ba.FWD_CONFIGS), ("attention dK/dV", ba._bwd_dkdv_kernel,
                                                                    ba.DKDV_CONFIGS),
                ("attention dQ", ba._bwd_dq_kernel, ba.DQ_CONFIGS))
    for name, fn, configs in families:
        first_decode = next(i for i, c in enumerate(configs) if c.kwargs["BM"] == ba.DECODE_MAX_Q)
        for i, cfg in enumerate(configs):
            if quick and i not in (0, first_decode):
                continue
            variants = [("bf16", 64, "tf32")]
            if i == 0 or not quick:
                variants += [("bf16", 16, "tf32"), ("fp32", 64, "tf32x3"), ("fp32", 64, "tf32"), ("fp32", 64, "ieee"),
                             ("fp16", 24, "tf32")]
            for dtype, D, prec in variants:
                BD = max(16, 1 << (D - 1).bit_length())
                meta = dict(cfg.kwargs, BD=BD, EVEN_D=BD == D, UPCAST=False, PRECISION=prec)
                splits = (False, True) if fn is ba._fwd_kernel and cfg.kwargs["BM"] == ba.DECODE_MAX_Q else (False,)
                for split in splits:
                    if fn is ba._fwd_kernel:
                        meta["SPLIT"] = split
                    label = f"{name} {cfg.kwargs['BM']}x{cfg.kwargs['BN']} w{cfg.num_warps} s{cfg.num_stages} " \
                            f"{dtype} d{D} {prec}{' split' if split else ''}"
                    yield label, fn, dict(meta), dtype, over, cfg.num_warps, cfg.num_stages
    stats = {n: "*fp64" for n in ("p_pm64", "p_pss", "p_pm32", "p_pv32", "p_ps32", "p_gm64", "p_gss", "p_gm32",
                                  "p_gv32", "p_gs32", "p_max")}
    yield "ccc max (FRCorr) fp32", ccc._ccc_max_kernel, dict(BT=64, BD=32), "fp32", {
        **stats, "p_off": "*i64", "p_idx": "*i64", "p_arg": "*i64"}, 4, 3
    yield "tlcc (FRSyn) fp32", tlcc._tlcc_kernel, dict(BT=64, BD=32), "fp32", {}, 4, 3
    for dtype in ("bf16", "fp32"):
        yield f"attention combine {dtype}", ba._combine_kernel, dict(BM=16, BD=64), dtype, over, 4, 3
        yield f"attention delta {dtype}", ba._delta_kernel, dict(BR=64, BD=64), dtype, over, 4, 3
        yield f"frame_diff {dtype}", frame_diff._frame_diff_fwd_kernel, dict(BLOCK_T=32, BLOCK_D=64), dtype, {}, 4, 3
        for pred in (0, 1, 2):
            meta = dict(PRED=pred, GUIDED=True, NOISE=True, CLIP=True, EPS_FROM_CLIPPED=pred == 0, BLOCK=1024)
            yield f"ddim pred {pred} {dtype}", ddim._ddim_fwd_kernel, meta, dtype, {"p_coef": "*fp32"}, 4, 3
        ws = weight_shift
        for name, fn, configs, extra in (("fwd", ws._weight_shift_fwd_kernel, ws.FWD_CONFIGS, {"HAS_BIAS": True}),
                                         ("low-rank fwd", ws._low_rank_fwd_kernel, ws.FWD_CONFIGS,
                                          {"HAS_BIAS": True, "BR": 16}),
                                         ("dx", ws._weight_shift_bwd_dx_kernel, ws.DX_CONFIGS, {}),
                                         ("dshift", ws._weight_shift_bwd_ddw_kernel, ws.DDW_CONFIGS, {})):
            for cfg in configs[:1] if quick else configs:
                precs = (("tf32x3",) + (() if quick else ("tf32", "ieee"))) if dtype == "fp32" else ("tf32",)
                for prec in precs:
                    meta = dict(cfg.kwargs, **extra, UPCAST=False, PRECISION=prec)
                    k = cfg.kwargs
                    yield (f"weight_shift {name} {k['BM']}x{k['BN']}x{k['BK']} w{cfg.num_warps} s{cfg.num_stages} "
                           f"{dtype} {prec}", fn, meta, dtype, {}, cfg.num_warps, cfg.num_stages)


def run(quick: bool = False, out=sys.stdout) -> List[str]:
    """Compile every case; print a line each; return the failures (empty when all compile cleanly)."""
    from reactfast import kernels

    if kernels.INTERPRET:
        raise RuntimeError("the kernels were imported for the interpreter: unset TRITON_INTERPRET first")
    failures = []
    for label, fn, meta, dtype, over, warps, stages in _cases(quick):
        start = time.perf_counter()
        try:
            info = compile_kernel(fn, meta, dtype, over, warps, stages)
        except Exception as exc:  # report every kernel, not just the first failure
            failures.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            print(f"FAIL {label}: {failures[-1]}", file=out, flush=True)
            continue
        bad = info["local"] > 0 or info["smem"] > HOPPER_SMEM
        if bad:
            failures.append(f"{label}: {info}")
        print(f"{'FAIL' if bad else 'ok  '} {label:58s} smem {info['smem']:6d} B  wgmma {info['wgmma']:3d}  "
              f"local {info['local']}  {time.perf_counter() - start:.1f} s", file=out, flush=True)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the first configuration per kernel (every dtype) and its first decode one")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter does not compile kernels", file=sys.stderr)
        return 2
    failures = run(quick=args.quick)
    print(f"{len(failures)} failed" if failures else "all kernels compiled for sm_90")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
