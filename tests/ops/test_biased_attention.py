import copy
import math
import sys

import pytest
import torch

from reactfast.nn import BiasedCrossAttention
from reactfast.ops import biased_attention
from reactfast.reference import biased_attention as ref
from reactfast.testing import assert_close, assert_rel_close
from tests.conftest import HAS_CUDA, TRITON_DEVICE, run_each_cpu_build

bao = sys.modules["reactfast.ops.biased_attention"]   # the module (the package exports the function)

DEVICE = TRITON_DEVICE


def _inputs(B, H, Tq, Tk, d, dtype=torch.float32, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    mk = lambda T: torch.randn(B, H, T, d, generator=g).to(device=device, dtype=dtype).requires_grad_()  # noqa: E731
    return mk(Tq), mk(Tk), mk(Tk)


def _precision(dtype, device):
    """The tolerance of the Triton kernels' default arithmetic: float32 inputs on a GPU take three
    TF32 products per product ("tf32x3"), float32 accuracy (at most 4.6e-7 against float64 on an
    H100, output and gradients, where one TF32 product gave up to 2.1e-3)."""
    return dtype


# Each fast backend on the device it runs on here (Triton: CUDA tensors, or the interpreter's CPU ones).
# The C++ kernels take float32 only (FAST_LOW: the backends for float16/bfloat16).
FAST_LOW = [("triton", TRITON_DEVICE), ("sdpa", "cpu")] + ([("sdpa", "cuda")] if HAS_CUDA else [])
FAST = FAST_LOW + [("cpp", "cpu")]


def _check(B, H, Tq, Tk, d, dtype=torch.float32, backends=FAST, **kw):
    """Output and every gradient of every fast backend against the float64 reference."""
    for backend, device in backends:
        _check_one(backend, device, B, H, Tq, Tk, d, dtype, **kw)


def _check_one(backend, device, B, H, Tq, Tk, d, dtype, **kw):
    q, k, v = _inputs(B, H, Tq, Tk, d, dtype, seed=Tq * 1000 + Tk, device=device)
    kw = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in kw.items()}
    out = biased_attention(q, k, v, backend=backend, **kw)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    expect = ref.biased_attention(q64, k64, v64, **kw)
    tol = _precision(dtype, device) if backend == "triton" else dtype
    assert_rel_close(f"{backend} out", expect, out, tol)
    grad = torch.randn_like(expect)
    got = torch.autograd.grad(out, (q, k, v), grad.to(out.dtype))
    want = torch.autograd.grad(expect, (q64, k64, v64), grad)
    for name, a, b in zip(("dq", "dk", "dv"), want, got):
        assert_rel_close(f"{backend} {name}", a, b, tol)


# Sweep of odd sizes: (Tq, Tk, q0, audio_ratio, period, extra).
SWEEP = [
    (1, 1, 0, 1, 8, 0),
    (7, 7, 0, 1, 8, 0),
    (7, 63, 56, 1, 8, 0),       # right-aligned window over 63 keys
    (63, 97, 0, 1, 1, 0),
    (1, 751, 750, 1, 8, 0),
    (97, 751, 0, 1, 8, 0),
    (8, 16, 0, 2, 8, 1),        # audio at twice the frame rate, current samples included
    (7, 97, 40, 2, 1, 0),
    (63, 7, 3, 1, 8, 0),        # more queries than keys: rows past the keys see all
]


@pytest.mark.parametrize("Tq,Tk,q0,ratio,period,extra", SWEEP)
def test_triton_matches_reference(Tq, Tk, q0, ratio, period, extra):
    _check(2, 2, Tq, Tk, 16, q_offset=q0, audio_ratio=ratio, period=period, extra=extra)


@pytest.mark.parametrize("d", [16, 24, 64, 128])
def test_head_dims(d):
    _check(1, 2, 33, 40, d, q_offset=7, period=8)


def test_key_lengths_and_per_sample_offsets():
    lengths = torch.tensor([40, 13, 1])
    offsets = torch.tensor([0, 5, 30])
    _check(3, 2, 20, 40, 16, q_offset=offsets, key_lengths=lengths)


def test_key_start_masks_empty_buffer_slots():
    starts = torch.tensor([0, 17, 39])
    _check(3, 2, 8, 40, 16, q_offset=32, key_start=starts)
    # Shift invariance: a right-aligned rolling buffer equals attention over the valid keys alone.
    q, k, v = (t.detach() for t in _inputs(1, 2, 8, 40, 16))
    full = biased_attention(q, k, v, q_offset=32, key_start=torch.tensor([17]), backend="triton")
    valid = biased_attention(q, k[:, :, 17:], v[:, :, 17:], q_offset=32 - 17, backend="triton")
    assert_rel_close("rolling", valid.double(), full, _precision(torch.float32, DEVICE))


def test_fully_masked_rows_give_zeros():
    q, k, v = _inputs(2, 2, 9, 20, 16)
    lengths = torch.tensor([0, 20], device=DEVICE)
    for backend in ("triton", "cpp", "sdpa", "reference"):
        q, k, v = (t.to("cpu" if backend == "cpp" else DEVICE) for t in (q, k, v))
        out = biased_attention(q, k, v, key_lengths=lengths.to(q.device), backend=backend)
        assert torch.isfinite(out).all()
        assert float(out[0].detach().abs().max()) == 0.0
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        assert all(torch.isfinite(g).all() for g in grads)
        assert float(grads[0][0].abs().max()) == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    # Under the interpreter bf16/fp16 are upcast after loading; on a GPU they feed the matrix units.
    if HAS_CUDA:
        _check(2, 4, 97, 751, 64, dtype=dtype, q_offset=0, backends=FAST_LOW)
    else:
        _check(1, 2, 17, 33, 16, dtype=dtype, q_offset=16, backends=FAST_LOW)


def test_cpp_takes_float32_and_the_cpu_default_routes_the_rest(monkeypatch):
    q, k, v = (t.detach() for t in _inputs(1, 2, 5, 9, 16, dtype=torch.bfloat16, device="cpu"))
    with pytest.raises(ValueError, match=r"forced \(backend='cpp'\) but they take float32 only"):
        biased_attention(q, k, v, q_offset=4, backend="cpp")
    out = biased_attention(q, k, v, q_offset=4)          # the CPU default: SDPA for bfloat16
    want = ref.biased_attention(q.double(), k.double(), v.double(), q_offset=4)
    assert_rel_close("bf16 default", want, out, torch.bfloat16)
    # Forced through the environment, the C++ kernels raise just as loudly for bfloat16.
    monkeypatch.setenv("REACTFAST_BACKEND", "biased_attention:cpp")
    with pytest.raises(ValueError, match=r"forced \(REACTFAST_BACKEND\) but they take float32 only"):
        biased_attention(q, k, v, q_offset=4)


def test_float64_runs_in_float64_on_every_device(device, monkeypatch):
    """float64 (a model cast with .double()) takes the SDPA path in float64 by default, on a GPU as
    on a CPU (the C++ and Triton kernels take float32 and half types; forcing them raises): output
    and gradients equal the float64 reference to float64 rounding."""
    q, k, v = _inputs(2, 2, 7, 19, 16, dtype=torch.float64, seed=5, device=device)
    kw = dict(q_offset=torch.tensor([12, 9]), key_start=torch.tensor([0, 3]), period=4)
    out = biased_attention(q, k, v, **{n: t.to(device) if isinstance(t, torch.Tensor) else t for n, t in kw.items()})
    assert out.dtype == torch.float64
    expect = ref.biased_attention(*(t.detach().cpu() for t in (q, k, v)), **kw)
    assert_rel_close("float64 out", expect, out, torch.float64)
    grad = torch.randn(expect.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, (q, k, v), grad.to(device))
    q64, k64, v64 = (t.detach().cpu().requires_grad_() for t in (q, k, v))
    want = torch.autograd.grad(ref.biased_attention(q64, k64, v64, **kw), (q64, k64, v64), grad)
    for name, a, b in zip(("dq", "dk", "dv"), want, got):
        assert_rel_close(f"float64 {name}", a, b, torch.float64)
    with pytest.raises(ValueError, match="forced .* but they take float32 only, got torch.float64"):
        biased_attention(q.detach().cpu(), k.detach().cpu(), v.detach().cpu(), backend="cpp")
    if q.is_cuda or bao._backend.triton_interpret():
        with pytest.raises(ValueError, match="Triton kernels were forced but they take .* got float64"):
            biased_attention(q.detach(), k.detach(), v.detach(), backend="triton")


def _route(d, **kw):
    """The path one float32 CPU call takes ("cpp" or "sdpa"), and its output checked against float64."""
    taken = []
    real_sdpa, real_cpp = bao._sdpa, bao._CppAttention.apply
    q, k, v = (t.detach() for t in _inputs(2, 2, 6, 11, d, device="cpu"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bao, "_sdpa", lambda *a: taken.append("sdpa") or real_sdpa(*a))
        mp.setattr(bao._CppAttention, "apply", lambda *a: taken.append("cpp") or real_cpp(*a))
        out = biased_attention(q, k, v, q_offset=5, **kw)
    assert_rel_close(f"d {d} {kw}", ref.biased_attention(q.double(), k.double(), v.double(), q_offset=5), out,
                     torch.float32)
    assert len(taken) == 1, taken
    return taken[0]


def test_cpu_default_takes_cpp_up_to_its_head_dim_and_sdpa_above(monkeypatch):
    """The choice depends on the head dim alone (one model's calls, offline and streaming, take one
    path); a forced cpp takes any float32 head dim."""
    limit = bao.CPP_MAX_HEAD_DIM
    assert _route(limit) == "cpp"
    assert _route(8) == "cpp"
    assert _route(limit + 8) == "sdpa"
    assert _route(64) == "sdpa"
    assert _route(64, backend="cpp") == "cpp"
    monkeypatch.setenv("REACTFAST_BACKEND", "biased_attention:cpp")
    assert _route(64) == "cpp"


def test_cpp_reads_strided_operands_and_returns_projection_layout():
    """q, k, v as views of projections (B, T, H, d) -> (B, H, T, d), k and v narrowed out of a longer
    buffer, and one with a non-unit last stride (copied): the same values as contiguous inputs, and
    out and every gradient laid out as (B, T, H, d), so merging the heads back is a view."""
    g = torch.Generator().manual_seed(3)
    B, H, Tq, Tk, d = 3, 4, 12, 50, 16
    qp = torch.randn(B, Tq, H, d, generator=g).requires_grad_()
    buf = torch.randn(B, Tk + 9, H, d, generator=g).requires_grad_()
    vt = torch.randn(B, H, d, Tk, generator=g).requires_grad_()
    q, k, v = qp.transpose(1, 2), buf[:, 5:5 + Tk].transpose(1, 2), vt.transpose(2, 3)
    kw = dict(q_offset=torch.tensor([38, 20, 45]), key_start=torch.tensor([0, 4, 30]), audio_ratio=1, period=8)
    out = biased_attention(q, k, v, backend="cpp", **kw)
    assert out.transpose(1, 2).is_contiguous()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want = ref.biased_attention(q64, k64, v64, **kw)
    assert_rel_close("strided out", want, out, torch.float32)
    grad = torch.randn(want.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, (q, k, v), grad.float())
    for name, a, b in zip(("dq", "dk", "dv"), torch.autograd.grad(want, (q64, k64, v64), grad), got):
        assert_rel_close(f"strided {name}", a, b, torch.float32)


def test_cpp_results_do_not_depend_on_the_thread_count():
    q, k, v = (t.detach() for t in _inputs(4, 4, 40, 200, 16, device="cpu"))
    grad = torch.randn(4, 4, 40, 16)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
            out = biased_attention(qg, kg, vg, q_offset=160, audio_ratio=1, backend="cpp")
            runs.append((out.detach(), *torch.autograd.grad(out, (qg, kg, vg), grad)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_sdpa_shares_one_bias_and_groups_distinct_patterns():
    """Samples with distinct (q_offset, key_start, key_lengths) each get their own bias; a batch of one
    pattern shares a single one: the results equal the reference either way."""
    starts = torch.tensor([0, 5, 0, 5, 9])
    _check(5, 2, 8, 40, 16, backends=[("sdpa", "cpu")], q_offset=32, key_start=starts)
    _check(5, 2, 8, 40, 16, backends=[("sdpa", "cpu")], q_offset=32, key_start=torch.full((5,), 3))


def test_bias_matches_spec_formula():
    slopes = ref.alibi_slopes(8)
    assert torch.allclose(slopes[:2], torch.tensor([0.5, 0.25]))
    bias = ref.attention_bias(3, 12, slopes, q_offset=9, period=8)[0]
    for h in (0, 3):
        for i in range(3):
            for j in range(12):
                want = -slopes[h] * math.floor((9 + i - j) / 8) if j <= 9 + i else float("-inf")
                assert float(bias[h, i, j]) == pytest.approx(want)
    audio = ref.attention_bias(2, 8, slopes, q_offset=1, period=2, audio_ratio=2, extra=1)[0, 0]
    # frame 1 -> pos 2; sees audio samples 0..3 (2 and 3 are its own).
    assert torch.isinf(audio[0, 4:]).all() and torch.isfinite(audio[0, :4]).all()
    assert float(audio[0, 0]) == pytest.approx(-0.5 * math.floor(2 / 4))


def test_opcheck():
    q, k, v = _inputs(1, 2, 5, 9, 16, device="cpu")
    args = (q.detach(), k.detach(), v.detach(), ref.alibi_slopes(2), torch.tensor([4], dtype=torch.int32),
            torch.tensor([2], dtype=torch.int32), torch.tensor([9], dtype=torch.int32), 8, 1, 0, 0.25, 5, "reference")
    torch.library.opcheck(torch.ops.reactfast.biased_attention_fwd.default, args)


def test_torch_compile_fullgraph():
    module = BiasedCrossAttention(32, 4, period=4).eval()
    x, mem = torch.randn(2, 6, 32), torch.randn(2, 10, 32)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    assert_close("compiled", module(x, mem, mem, q_offset=4), compiled(x, mem, mem, q_offset=4), atol=1e-6, rtol=0)


def test_compiled_graph_calls_the_cpp_kernels():
    """Inside torch.compile (CPU float32, head dim 16) the C++ kernels run as custom ops: the graph
    holds reactfast::biased_attention_cpu_fwd (no SDPA, no bias built), and the output and gradients
    equal eager mode's to the bit, with per-sample offsets, empty buffer slots and a split-head
    (non-contiguous) query as ReactFace's projections give them; checked against float64."""
    from torch._dynamo.testing import CompileCounterWithBackend

    g = torch.Generator().manual_seed(5)
    B, H, Tq, Tk, d = 3, 4, 8, 40, 16
    q = torch.randn(B, Tq, H, d, generator=g).permute(0, 2, 1, 3).requires_grad_()
    k, v = (torch.randn(B, H, Tk, d, generator=g).requires_grad_() for _ in range(2))
    q0, starts = torch.tensor([30, 30, 32]), torch.tensor([0, 2, 0])

    def attend(q, k, v):
        return biased_attention(q, k, v, q_offset=q0, key_start=starts, period=8, audio_ratio=1)

    seen = []

    def record(gm, inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm

    counter = CompileCounterWithBackend(record)
    out = torch.compile(attend, fullgraph=True, backend=counter)(q, k, v)
    assert counter.frame_count == 1
    assert any("biased_attention_cpu_fwd" in t for t in seen), seen
    assert not any("scaled_dot_product" in t for t in seen), seen
    w = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    eager = attend(q, k, v)
    eager_grads = torch.autograd.grad((eager * w).sum(), (q, k, v))
    assert torch.equal(out, eager) and all(torch.equal(a, b) for a, b in zip(grads, eager_grads))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want = ref.biased_attention(q64, k64, v64, q_offset=q0, key_start=starts, period=8, audio_ratio=1)
    want_grads = torch.autograd.grad((want * w.double()).sum(), (q64, k64, v64))
    assert_rel_close("compiled cpp", want, out, torch.float32)
    for name, a, b in zip("qkv", want_grads, grads):
        assert_rel_close(f"compiled cpp d{name}", a, b, torch.float32)


def test_cpp_custom_op_opcheck():
    q, k, v = _inputs(2, 2, 5, 9, 16, device="cpu")
    q = q.detach().transpose(1, 2).contiguous().transpose(1, 2)     # the heads layout of a projection
    i32 = lambda *x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
    args = (q, k.detach(), v.detach(), ref.alibi_slopes(2), i32(4, 6), i32(2, 0), i32(9, 7), 8, 1, 0, 0.25, 5)
    torch.library.opcheck(torch.ops.reactfast.biased_attention_cpu_fwd.default, args)
    out, lse = torch.ops.reactfast.biased_attention_cpu_fwd(*args)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    torch.library.opcheck(torch.ops.reactfast.biased_attention_cpu_bwd.default, (dout, *args[:3], out, lse, *args[3:]))


def test_module_matches_reference_attention(device):
    torch.manual_seed(0)
    module = BiasedCrossAttention(32, 4, kdim=12, vdim=12, period=8).eval().to(device)
    x, mem = torch.randn(2, 5, 32, device=device), torch.randn(2, 20, 12, device=device)
    out = module(x, mem, mem, q_offset=15)
    module64 = module.double()
    x, mem = x.double(), mem.double()
    q = module64._heads(module64.q_proj(x))
    k = module64._heads(module64.k_proj(mem))
    v = module64._heads(module64.v_proj(mem))
    o = ref.biased_attention(q, k, v, q_offset=15).transpose(1, 2).reshape(2, 5, 32)
    assert_rel_close("module", module64.out_proj(o), out, _precision(torch.float32, device))


@pytest.mark.parametrize("ratio,max_cache", [(1, None), (2, None), (2, 40)])
def test_incremental_equals_full_call(device, ratio, max_cache):
    torch.manual_seed(1)
    module = BiasedCrossAttention(16, 2, period=8, audio_ratio=ratio, max_cache=max_cache).eval().to(device)
    W, steps = 4, 6
    frames = torch.randn(2, W * steps, 16, device=device)
    keys = torch.randn(2, W * steps * ratio, 16, device=device)
    tol = _precision(torch.float32, device)
    full = module(frames, keys, keys, q_offset=0)
    cache = module.new_cache()
    outs = []
    for s in range(steps):
        new = keys[:, s * W * ratio:(s + 1) * W * ratio]
        outs.append(module.step(frames[:, s * W:(s + 1) * W], new, new, cache))
    stepped = torch.cat(outs, 1)
    if max_cache is None:
        assert_rel_close("incremental", full.double(), stepped, tol)
    else:
        # A bounded cache equals full attention restricted to the last max_cache keys.
        assert cache.length == max_cache
        last = module(frames[:, -W:], keys[:, -max_cache:], keys[:, -max_cache:], q_offset=max_cache // ratio - W)
        assert_rel_close("bounded", last.double(), outs[-1], tol)



def test_a_refused_step_leaves_the_cache_as_it_was():
    """A step refused for its window, its batch or its value length changes nothing in the cache:
    before, the keys were appended (and ``seen`` advanced) before the checks, so a caller that went
    on after the error attended over its keys twice."""
    torch.manual_seed(2)
    module = BiasedCrossAttention(16, 2, period=8, audio_ratio=2, max_cache=8).eval()
    frames, keys = torch.randn(2, 12, 16), torch.randn(2, 24, 16)
    cache = module.new_cache()
    outs = [module.step(frames[:, :2], keys[:, :4], keys[:, :4], cache)]
    held = (cache.k.clone(), cache.v.clone(), cache.seen)
    refused = [
        (frames[:, 2:6], keys[:, 4:6], keys[:, 4:6], "longer than the 3 frames seen"),
        (frames[:, :5], keys[:, 4:10], keys[:, 4:10], "reaches further back than the 8 cached keys"),
        (frames[:1, 2:4], keys[:1, 4:8], keys[:1, 4:8], "the cache holds 2 samples, got a batch of 1"),
        (frames[:1, 2:4], keys[:, 4:8], keys[:, 4:8], "must share the batch size"),
        (frames[:, 2:4], keys[:, 4:8], keys[:, 4:6], "must share the batch size"),
    ]
    for q, k, v, match in refused:
        with pytest.raises(ValueError, match=match):
            module.step(q, k, v, cache)
        assert cache.seen == held[2] and torch.equal(cache.k, held[0]) and torch.equal(cache.v, held[1])
    outs.append(module.step(frames[:, 2:4], keys[:, 4:8], keys[:, 4:8], cache))
    full = copy.deepcopy(module).double()(frames[:, :4].double(), keys[:, :8].double(), keys[:, :8].double())
    assert_rel_close("after refused steps", full, torch.cat(outs, 1), torch.float32)

@pytest.mark.parametrize("call,err,match", [
    (lambda q, k, v: biased_attention(q, k[:, :1], v[:, :1]), ValueError, "k must have shape"),
    (lambda q, k, v: biased_attention(q, k[..., :8], v[..., :8]), ValueError, "k must have shape"),
    (lambda q, k, v: biased_attention(q, k, v[:, :, :3]), ValueError, "v must have k's shape"),
    (lambda q, k, v: biased_attention(q, k.to(torch.int32), v), TypeError, "k must have dtype"),
    (lambda q, k, v: biased_attention(q, k.double(), v), TypeError, "share one dtype"),
    (lambda q, k, v: biased_attention(q, k.half(), v), TypeError, "share one dtype"),
    (lambda q, k, v: biased_attention(q, k, v, q_offset=-1), ValueError, r"q_offset must be in \[0, 2097152\]"),
    (lambda q, k, v: biased_attention(q, k, v, q_offset=2 ** 21 + 1), ValueError, "q_offset must be in"),
    (lambda q, k, v: biased_attention(q, k, v, precision="fp32"), ValueError,
     r"precision must be one of \('tf32x3', 'tf32', 'ieee'\)"),
    (lambda q, k, v: biased_attention(q, k, v, period=0), ValueError, "period must be an int >= 1"),
    (lambda q, k, v: biased_attention(q, k, v, audio_ratio=0), ValueError, "audio_ratio must be an int >= 1"),
    (lambda q, k, v: biased_attention(q, k, v, key_lengths=torch.tensor([99, 1])), ValueError, "key_lengths must be"),
    (lambda q, k, v: biased_attention(q, k, v, slopes=torch.ones(3)), ValueError, "one value per head"),
    (lambda q, k, v: biased_attention(q, k, v, q_offset=1.5), TypeError, "q_offset must be an int"),
    (lambda q, k, v: biased_attention(q[0], k, v), ValueError, "q must have 4 dimensions"),
])
def test_bad_input(call, err, match):
    q, k, v = (t.detach() for t in _inputs(2, 2, 4, 6, 16, device="cpu"))
    with pytest.raises(err, match=match):
        call(q, k, v)


def test_module_bad_input():
    module = BiasedCrossAttention(16, 2, audio_ratio=2)
    with pytest.raises(ValueError, match="num_heads"):
        BiasedCrossAttention(16, 3)
    with pytest.raises(ValueError, match="key must have last dim 16"):
        module(torch.randn(1, 2, 16), torch.randn(1, 4, 8), torch.randn(1, 4, 16))
    with pytest.raises(ValueError, match="multiple of audio_ratio"):
        module.step(torch.randn(1, 1, 16), torch.randn(1, 3, 16), torch.randn(1, 3, 16), module.new_cache())


@pytest.mark.parametrize("period_q,folds", [(8, 3), (7, 2), (1, 5)])
def test_query_period_folds_windows_over_shared_keys(period_q, folds):
    """Rows of ``folds`` query windows of ``period_q`` frames over one key set equal each window alone."""
    _check(2, 2, period_q * folds, 40, 16, q_offset=24, key_start=torch.tensor([3, 0]), query_period=period_q)
    q, k, v = (t.detach() for t in _inputs(2, 2, period_q * folds, 40, 16, device="cpu"))
    folded = biased_attention(q, k, v, q_offset=24, query_period=period_q, backend="reference")
    for f in range(folds):
        rows = slice(f * period_q, (f + 1) * period_q)
        alone = biased_attention(q[:, :, rows].contiguous(), k, v, q_offset=24, backend="reference")
        assert_close(f"fold {f}", alone, folded[:, :, rows], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="query_period must be an int >= 1 dividing Tq"):
        biased_attention(q, k, v, query_period=period_q * folds + 1)


def test_sdpa_bias_cache_follows_slopes_and_patterns():
    """The CPU path caches prepared biases by pattern and slope values: slopes edited in place, and
    more patterns than the cache holds, must still give the reference's result."""
    mod = sys.modules["reactfast.ops.biased_attention"]
    q, k, v = (t.detach() for t in _inputs(3, 2, 5, 24, 8, device="cpu"))
    slopes = torch.tensor([0.5, 0.25])
    for step in range(mod._BIAS_CACHE_SIZE + 6):
        q0 = torch.tensor([step % 19, (step * 7) % 19, 19])
        start = torch.tensor([step % 5, 0, step % 3])
        out = biased_attention(q, k, v, slopes, q_offset=q0, key_start=start, backend="sdpa")
        want = ref.biased_attention(q.double(), k.double(), v.double(), slopes.double(), q_offset=q0, key_start=start)
        assert_close(f"step {step}", want.float(), out, atol=1e-5, rtol=1e-5)
        slopes.mul_(1.01)                     # in place: same storage, new values
    assert len(mod._BIAS_CACHE) <= mod._BIAS_CACHE_SIZE


def _kernel_case(config, B, H, Tq, Tk, d, q0, ratio=1, period=8, extra=0, starts=None, lengths=None, qperiod=None,
                 splits=None, dtype=torch.float32, precision="ieee"):
    """The Triton kernels called directly with one block configuration (and split count), outputs
    poisoned, against the float64 reference: output, row log-sum-exp and every gradient."""
    from reactfast import _backend
    from reactfast.kernels import biased_attention as kern

    q, k, v = (t.detach() for t in _inputs(B, H, Tq, Tk, d, dtype, seed=7 * Tq + Tk))
    i32 = lambda x, fill: (torch.full((B,), fill) if x is None else x).to(DEVICE, torch.int32)  # noqa: E731
    q0s, st, ln = i32(torch.as_tensor(q0).expand(B).clone(), 0), i32(starts, 0), i32(lengths, Tk)
    slopes = ref.alibi_slopes(H, DEVICE).float()
    qp = Tq if qperiod is None else qperiod
    scale = d ** -0.5
    assert _backend.poison_outputs(True), "kernel outputs must be poisoned (the autouse fixture)"
    out, lse = kern.biased_attention_fwd(q, k, v, slopes, q0s, st, ln, scale, period, ratio, extra, qp, precision,
                                         splits=splits, config=config)
    do = torch.randn_like(out)
    dq, dk, dv = kern.biased_attention_bwd(do, q, k, v, out, lse, slopes, q0s, st, ln, scale, period, ratio, extra,
                                           qp, precision, config=config)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    kw = dict(q_offset=q0s.long(), audio_ratio=ratio, period=period, extra=extra, key_start=st.long(),
              key_lengths=ln.long(), query_period=qp)
    want = ref.biased_attention(q64, k64, v64, **kw)
    tol = "tf32" if precision == "tf32" and dtype == torch.float32 and torch.device(DEVICE).type == "cuda" else dtype
    assert_rel_close(f"{config} out", want, out, tol)
    bias = ref.attention_bias(Tq, Tk, slopes.double(), q0s.long(), period, ratio, extra, ln.long(), batch=B,
                              key_start=st.long(), query_period=qp)
    want_lse = torch.logsumexp(q64 @ k64.transpose(-1, -2) * scale + bias, -1)
    empty = torch.isinf(want_lse)
    assert torch.equal(torch.isinf(lse) & (lse > 0), empty), "empty rows must have log-sum-exp +inf"
    assert_rel_close(f"{config} lse", want_lse[~empty], lse[~empty], 1e-5 if tol == torch.float32 else 1e-2)
    grads = torch.autograd.grad(want, (q64, k64, v64), do.double())
    for name, a, b in zip(("dq", "dk", "dv"), grads, (dq, dk, dv)):
        assert_rel_close(f"{config} {name}", a, b, tol)


def _distinct_blocks():
    from reactfast.kernels import biased_attention as kern
    return sorted({(c.kwargs["BM"], c.kwargs["BN"]) for c in kern.FWD_CONFIGS + kern.DKDV_CONFIGS + kern.DQ_CONFIGS})


@pytest.mark.parametrize("BM,BN", _distinct_blocks())
def test_every_tuning_configuration(BM, BN):
    """Every block shape the autotuner may pick gives the reference's results, on cases with fully
    visible key blocks (long right-aligned windows, a key start and a length cutting blocks that
    later rows see whole), audio keys at two and three times the frame rate with current samples
    (bias steps of 8 and of 15 keys), and folded query windows."""
    config = {"BM": BM, "BN": BN}
    _kernel_case(config, 2, 2, 97, 300, 16, q0=[203, 260], starts=torch.tensor([5, 0]),
                 lengths=torch.tensor([300, 270]))
    _kernel_case(config, 1, 2, 40, 220, 24, q0=50, ratio=2, extra=1, period=4)
    _kernel_case(config, 1, 1, 30, 200, 16, q0=40, ratio=3, extra=2, period=5)
    _kernel_case(config, 2, 1, 3 * 16, 180, 16, q0=164, qperiod=16, starts=torch.tensor([0, 37]))


@pytest.mark.parametrize("splits", [1, 2, 3, 5])
def test_decode_splits_merge_exactly(splits):
    """The online window (few queries over a long buffer): keys split across programs and merged
    equal one program's result; rows whose keys all fall in one split, empty rows (key length 0)
    and key starts past a split boundary included."""
    for Tq, Tk, q0 in ((1, 751, 750), (7, 751, 744), (16, 600, 100), (8, 300, 292)):
        _kernel_case({"BM": 16, "BN": 32}, 3, 2, Tq, Tk, 16, q0=q0, splits=splits,
                     starts=torch.tensor([0, 290, 0]), lengths=torch.tensor([Tk, Tk, 0]))
    _kernel_case({"BM": 16, "BN": 64}, 2, 2, 8, 512, 16, q0=248, ratio=2, extra=1, splits=splits)


def test_decode_split_count_and_limits():
    from reactfast.kernels import biased_attention as kern
    q = torch.empty(1, 1, 8, 16, device=DEVICE)
    assert kern.decode_splits(q, 1, 8, 8, 4096) > 1          # a few streams over long keys: split
    assert kern.decode_splits(q, 1, 8, 17, 4096) == 1        # more rows than the decode block: never
    assert kern.decode_splits(q, 512, 8, 8, 4096) == 1       # enough (sample, head) pairs already
    with pytest.raises(ValueError, match="split keys need at most 16 queries"):
        q17 = torch.zeros(1, 1, 17, 16, device=DEVICE)
        ints = [torch.full((1,), n, dtype=torch.int32, device=DEVICE) for n in (0, 0, 17)]
        kern.biased_attention_fwd(q17, q17, q17, torch.ones(1, device=DEVICE), *ints, 0.25, 8, 1, 0, 17, splits=2)


def test_deterministic_mode_uses_a_fixed_configuration(monkeypatch):
    """Under torch.use_deterministic_algorithms(True) the kernels skip the autotuner (its timed pick
    may differ between processes) for the first candidate of the regime, warps and stages included;
    results still equal the reference."""
    from reactfast.kernels import biased_attention as kern

    seen = []

    class Spy:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((self.kernel.__name__, kwargs["BM"], kwargs["BN"], kwargs.get("num_warps")))
                return self.kernel[grid](*args, **kwargs)
            return launch

    for name in ("_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"):
        monkeypatch.setattr(kern, name, Spy(getattr(kern, name)))
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for Tq in (20, 8):
            q, k, v = _inputs(1, 2, Tq, 70, 16)
            out = biased_attention(q, k, v, q_offset=50, backend="triton")
            grads = torch.autograd.grad(out.sum(), (q, k, v))
            want = ref.biased_attention(*(t.detach().double().requires_grad_() for t in (q, k, v)), q_offset=50)
            assert_rel_close(f"Tq {Tq}", want, out, _precision(torch.float32, DEVICE))
            assert all(torch.isfinite(g).all() for g in grads)
    finally:
        torch.use_deterministic_algorithms(previous)
    expect = []
    for Tq in (20, 8):
        for fn, configs in (("_fwd_kernel", kern.FWD_CONFIGS), ("_bwd_dkdv_kernel", kern.DKDV_CONFIGS),
                            ("_bwd_dq_kernel", kern.DQ_CONFIGS)):
            c = next(c for c in configs if (c.kwargs["BM"] == 16) == (Tq <= kern.DECODE_MAX_Q))
            expect.append((fn, c.kwargs["BM"], c.kwargs["BN"], c.num_warps))
    assert sorted(seen) == sorted(expect), seen


@pytest.mark.parametrize("backend,device", FAST_LOW)
def test_autocast_casts_mixed_inputs(backend, device):
    """Under autocast, bf16 queries over float32 keys (a bf16 projection beside a float32 buffer) are
    cast to the autocast dtype, as a matmul's inputs are, and match float64 at bf16's tolerance."""
    q, k, v = (t.detach() for t in _inputs(2, 2, 9, 40, 16, device=device))
    q = q.to(torch.bfloat16)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        out = biased_attention(q, k, v, q_offset=31, backend=backend)
    assert out.dtype == torch.bfloat16
    want = ref.biased_attention(q.double(), k.to(torch.bfloat16).double(), v.to(torch.bfloat16).double(), q_offset=31)
    assert_rel_close(f"{backend} autocast", want, out, torch.bfloat16)


_ISA_SCRIPT = """
import sys, torch
from reactfast import _C
from reactfast.ops import biased_attention
from reactfast.reference import biased_attention as ref
from reactfast.testing import assert_rel_close
g = torch.Generator().manual_seed(5)
q, k, v = (torch.randn(3, 2, T, 24, generator=g, dtype=torch.float64) for T in (20, 45, 45))
kw = dict(q_offset=torch.tensor([0, 12, 40]), key_start=torch.tensor([0, 3, 44]), audio_ratio=2, extra=1, period=4)
q32, k32, v32 = (t.float().requires_grad_() for t in (q, k, v))
out = biased_attention(q32, k32, v32, backend="cpp", **kw)
q64, k64, v64 = (t.clone().requires_grad_() for t in (q, k, v))
want = ref.biased_attention(q64, k64, v64, **kw)
grad = torch.randn(want.shape, generator=g, dtype=torch.float64)
assert_rel_close("out", want, out, torch.float32)
for name, a, b in zip("qkv", torch.autograd.grad(want, (q64, k64, v64), grad),
                      torch.autograd.grad(out, (q32, k32, v32), grad.float())):
    assert_rel_close("d" + name, a, b, torch.float32)
print(_C.cpu_isa())
"""


def test_cpp_every_cpu_build_matches_reference(tmp_path):
    """The kernels' AVX-512, AVX2 and baseline builds (REACTFAST_CPU_ISA caps the pick), each in a
    process of its own as far as this machine goes, against the float64 reference."""
    from reactfast import _backend

    if not _backend.cpp_status()[0]:
        pytest.skip("needs the C++ extension")
    script = tmp_path / "run.py"
    script.write_text(_ISA_SCRIPT)
    seen = {out.strip() for out in run_each_cpu_build(script)}
    assert "baseline" in seen, seen


def test_eager_triton_calls_skip_the_custom_op(monkeypatch):
    """Eager calls launch the Triton kernels through an autograd.Function, not the custom op (whose
    dispatch cost more host time than the kernels' GPU time); output and gradients as the float64
    reference says."""
    def refuse(*args, **kwargs):
        raise AssertionError("the custom op was called in eager mode")

    monkeypatch.setattr(bao, "_fwd", refuse)
    monkeypatch.setattr(bao, "_bwd", refuse)
    q, k, v = _inputs(2, 2, 9, 20, 16, seed=5)
    out = biased_attention(q, k, v, q_offset=11, backend="triton")
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want = ref.biased_attention(q64, k64, v64, q_offset=11)
    assert_rel_close("eager out", want, out, torch.float32)
    grad = torch.randn_like(want)
    for name, a, b in zip(("dq", "dk", "dv"), torch.autograd.grad(want, (q64, k64, v64), grad),
                          torch.autograd.grad(out, (q, k, v), grad.float())):
        assert_rel_close(f"eager {name}", a, b, torch.float32)


def test_default_slopes_and_int_offsets_are_built_once(monkeypatch):
    """Default ALiBi slopes and offsets given as ints are cached in eager mode (each build is a kernel
    launch on a GPU) and built afresh while torch.compile traces."""
    bao._CONSTANTS.clear()
    built = []
    real = ref.alibi_slopes
    monkeypatch.setattr(bao._ref, "alibi_slopes", lambda *a: built.append(a) or real(*a))
    q, k, v = (t.detach() for t in _inputs(2, 2, 5, 9, 16, device="cpu"))
    first = biased_attention(q, k, v, q_offset=4, backend="reference")
    again = biased_attention(q, k, v, q_offset=4, backend="reference")
    assert torch.equal(first, again) and len(built) == 1
    assert bao._per_sample("q_offset", 4, 2, q.device, 0) is bao._per_sample("q_offset", 4, 2, q.device, 0)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert bao._per_sample("q_offset", 4, 2, q.device, 0) is not bao._per_sample("q_offset", 4, 2, q.device, 0)
