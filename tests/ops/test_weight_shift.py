import copy

import pytest
import torch
from torch import nn

from reactfast import _backend
from reactfast.nn import WeightShiftLinear, personalize, personalized_call
from reactfast.nn.personalize import WeightShiftMultiheadAttention
from reactfast.ops.weight_shift import weight_shift_linear
from reactfast.reference import weight_shift as ref
from reactfast.testing import assert_close, assert_rel_close
from tests.conftest import TRITON_DEVICE, run_each_cpu_build


def _inputs(B, L, d_in, d_out, bias=True, rank=None, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: (torch.randn(*s, generator=g) * 0.5).to(device=device, dtype=dtype).requires_grad_()  # noqa: E731
    x, w = mk(B, L, d_in), mk(d_out, d_in)
    shift = (mk(B, d_out, rank), mk(B, d_in, rank)) if rank else mk(B, d_out, d_in)
    b = mk(d_out) if bias else None
    return x, w, shift, b


def _leaves(x, w, shift, b):
    out = [x, w] + (list(shift) if isinstance(shift, tuple) else [shift])
    return out + ([b] if b is not None else [])


CPP_OK, CPP_WHY = _backend.backend_status("cpp", "cpu", "weight_shift")
needs_cpp = pytest.mark.skipif(not CPP_OK, reason=f"C++ weight-shift kernels unavailable: {CPP_WHY}")
# Each fast backend on the device it runs on here (Triton: CUDA tensors, or the interpreter's CPU ones).
BACKENDS = [("triton", TRITON_DEVICE), pytest.param("cpp", "cpu", marks=needs_cpp)]


def _float64(*tensors):
    return [None if t is None else t.detach().double().requires_grad_() for t in tensors]


@pytest.mark.parametrize("backend,where", BACKENDS)
@pytest.mark.parametrize("B,L,d_in,d_out", [(1, 1, 1, 1), (3, 7, 63, 97), (32, 5, 16, 48), (2, 97, 33, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_kernels_match_float64_reference(backend, where, B, L, d_in, d_out, bias):
    x, w, shift, b = _inputs(B, L, d_in, d_out, bias, seed=B * L, device=where)
    got = weight_shift_linear(x, w, shift, b, backend=backend)
    x64, w64, s64, b64 = _float64(x, w, shift, b)
    want = ref.weight_shift_linear(x64, w64, s64, b64)
    # The summed weight explicitly, as the authors' code forms it.
    explicit = torch.stack([x64[i] @ (w64 + s64[i]).t() for i in range(B)]) + (b64 if b64 is not None else 0)
    assert_rel_close("y", want, got, precision(where))
    assert_rel_close("explicit", explicit, got, precision(where))
    grad = torch.randn_like(want)
    for name, a, c in zip("x w dW b".split(), torch.autograd.grad(want, _leaves(x64, w64, s64, b64), grad),
                          torch.autograd.grad(got, _leaves(x, w, shift, b), grad.float())):
        assert_rel_close(f"d{name}", a, c, precision(where))


def precision(device):
    """The tolerance of the Triton kernels' default float32 arithmetic on ``device``: three TF32
    products per product on a GPU ("tf32x3"), float32 accuracy (one TF32 product missed the TF32
    tolerance, 1.3e-3, for one-term sums on an H100)."""
    return torch.float32


@needs_cpp
@pytest.mark.parametrize("B,L,d_in,d_out", [
    (1, 751, 17, 5),      # one sample: output rows split across threads; 7 token chunks
    (3, 113, 300, 97),    # two token chunks; depth over one 256 block; d_out not a multiple of 3
    (2, 63, 513, 130),    # backward: a partial 64-column block
    (2, 300, 70, 9),      # d(dW): tokens over one 256 block; d_out not a multiple of 6
    (4, 102, 64, 1536),   # the bench's token count and d_out
])
def test_cpp_blocking_paths(B, L, d_in, d_out):
    x, w, shift, b = _inputs(B, L, d_in, d_out, seed=L)
    got = weight_shift_linear(x, w, shift, b, backend="cpp")
    want = ref.weight_shift_linear(x.double(), w.double(), shift.double(), b.double())
    assert_close("y", want, got.double(), atol=2e-4, rtol=1e-4)
    grad = torch.randn(want.shape, dtype=torch.float64)
    for name, a, c in zip(("dx", "dW", "dshift", "dbias"), torch.autograd.grad(want, (x, w, shift, b), grad),
                          torch.autograd.grad(got, (x, w, shift, b), grad.float())):
        assert_close(name, a, c.double(), atol=5e-4, rtol=1e-4)


_ISA_SCRIPT = """
import torch
from reactfast import _C
from reactfast.ops.weight_shift import weight_shift_linear
from reactfast.reference import weight_shift as ref
from reactfast.testing import assert_rel_close
g = torch.Generator().manual_seed(7)
# Tokens, outputs and inputs off the 6 x 16 tiles, and a case wide enough for many tasks.
for B, L, d_in, d_out in ((3, 13, 37, 21), (2, 6, 16, 16), (4, 50, 130, 97), (1, 1, 1, 1)):
    x, w, b = torch.randn(B, L, d_in, generator=g), torch.randn(d_out, d_in, generator=g), torch.randn(d_out)
    shift = torch.randn(B, d_out, d_in, generator=g) * 0.3
    leaves32 = [t.clone().requires_grad_() for t in (x, w, shift, b)]
    leaves64 = [t.double().requires_grad_() for t in (x, w, shift, b)]
    got = weight_shift_linear(*leaves32, backend="cpp")
    want = ref.weight_shift_linear(*leaves64)
    assert_rel_close("y", want, got, torch.float32)
    grad = torch.randn(want.shape, generator=g, dtype=torch.float64)
    for name, a, c in zip(("dx", "dW", "dshift", "dbias"), torch.autograd.grad(want, leaves64, grad),
                          torch.autograd.grad(got, leaves32, grad.float())):
        assert_rel_close(name, a, c, torch.float32)
print(_C.weight_shift_cpu_build())
"""


@needs_cpp
def test_cpp_every_cpu_build_matches_reference(tmp_path):
    """The AVX-512, AVX2 and baseline builds (REACTFAST_CPU_ISA caps the pick), each in a process of
    its own as far as this machine goes, forward and backward against the float64 reference."""
    script = tmp_path / "run.py"
    script.write_text(_ISA_SCRIPT)
    seen = {out.strip() for out in run_each_cpu_build(script)}
    assert "baseline" in seen, seen


@needs_cpp
def test_cpp_is_the_cpu_default_for_float32_only():
    x, w, shift, b = (t.detach() for t in _leaves(*_inputs(2, 3, 4, 5)))
    assert torch.equal(weight_shift_linear(x, w, shift, b), weight_shift_linear(x, w, shift, b, backend="cpp"))
    half = [t.to(torch.bfloat16) for t in (x, w, shift, b)]
    with pytest.raises(RuntimeError, match="'cpp' runs float32"):
        weight_shift_linear(*half, backend="cpp")
    assert_close("bf16 falls back", weight_shift_linear(*half, backend="reference").float(),
                 weight_shift_linear(*half).float(), atol=0, rtol=0)


@pytest.mark.parametrize("backend,where", [("triton", TRITON_DEVICE), ("reference", "cpu")])
@pytest.mark.parametrize("rank,bias", [(1, True), (8, False), (20, True)])
def test_low_rank_kernel_against_float64(backend, where, rank, bias):
    """The fused low-rank forward (x V beside x W^T, r padded to 16 or 32) and its factored backward
    against float64 and against the full shift U V^T written in."""
    x, w, (u, v), b = _inputs(3, 37, 70, 45, bias, rank=rank, seed=rank, device=where)
    got = weight_shift_linear(x, w, (u, v), b, backend=backend)
    x64, w64, u64, v64, b64 = _float64(x, w, u, v, b)
    want = ref.low_rank_shift_linear(x64, w64, u64, v64, b64)
    explicit = ref.weight_shift_linear(x64, w64, u64 @ v64.transpose(1, 2), b64)
    assert_rel_close("y", want, got, precision(where))
    assert_rel_close("explicit", explicit, got, precision(where))
    grad = torch.randn_like(want)
    leaves = [t for t in (x, w, u, v, b) if t is not None]
    leaves64 = [t for t in (x64, w64, u64, v64, b64) if t is not None]
    for name, a, c in zip("x w U V b".split(), torch.autograd.grad(want, leaves64, grad),
                          torch.autograd.grad(got, leaves, grad.float())):
        assert_rel_close(f"d{name}", a, c, precision(where))


@pytest.mark.parametrize("kind", ["fwd", "low_rank", "dx", "dshift"])
def test_every_tuning_configuration(kind):
    """Every block shape the autotuner may pick, each Triton kernel called directly, against float64."""
    from reactfast.kernels import weight_shift as kern

    configs = {"fwd": kern.FWD_CONFIGS, "low_rank": kern.FWD_CONFIGS, "dx": kern.DX_CONFIGS,
               "dshift": kern.DDW_CONFIGS}[kind]
    # On a GPU with each candidate's own warps and stages: Triton's defaults (4 warps, 3 stages) do
    # not fit every block shape in shared memory.
    gpu = torch.device(TRITON_DEVICE).type == "cuda"
    for cfg in {tuple(sorted(c.kwargs.items())) + ((("num_warps", c.num_warps), ("num_stages", c.num_stages))
                                                    if gpu else ()) for c in configs}:
        config = dict(cfg)
        x, w, shift, b = (t.detach() for t in _leaves(*_inputs(2, 102, 80, 150, seed=len(cfg), device=TRITON_DEVICE)))
        x64, w64, s64, b64 = (t.double() for t in (x, w, shift, b))
        if kind == "fwd":
            got = kern.weight_shift_fwd(x, w, shift, b, "ieee", config)
            want = ref.weight_shift_linear(x64, w64, s64, b64)
        elif kind == "low_rank":
            u, v = shift[:, :, :5].contiguous(), torch.randn(2, 80, 5, device=TRITON_DEVICE)
            got = kern.low_rank_fwd(x, w, u, v, b, "ieee", config)
            want = ref.low_rank_shift_linear(x64, w64, u.double(), v.double(), b64)
        elif kind == "dx":
            dy = torch.randn(2, 102, 150, device=TRITON_DEVICE)
            got, want = kern.weight_shift_bwd_dx(dy, w, shift, "ieee", config), dy.double() @ w64 + dy.double() @ s64
        else:
            dy = torch.randn(2, 102, 150, device=TRITON_DEVICE)
            got, want = kern.weight_shift_bwd_dshift(dy, x, "ieee", config), dy.double().transpose(1, 2) @ x64
        assert_rel_close(f"{kind} {config}", want, got, torch.float32)


@pytest.mark.parametrize("low_rank", [False, True])
def test_autocast_casts_the_inputs(low_rank):
    """Under autocast the op computes in the autocast dtype from float32 parameters, as a matmul would."""
    x, w, shift, b = _inputs(2, 9, 24, 40, rank=4 if low_rank else None, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = weight_shift_linear(x, w, shift, b)
    assert got.dtype == torch.bfloat16
    x64, w64, b64 = _float64(x, w, b)
    s64 = tuple(_float64(*shift)) if low_rank else _float64(shift)[0]
    want = (ref.low_rank_shift_linear(x64, w64, *s64, b64) if low_rank else ref.weight_shift_linear(x64, w64, s64, b64))
    assert_rel_close("autocast", want, got, torch.bfloat16)
    grads = torch.autograd.grad(got.float().sum(), _leaves(x, w, shift, b))
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("B", [1, 3, 32])
def test_low_rank(B):
    x, w, (u, v), b = _inputs(B, 9, 24, 40, rank=4, seed=B)
    got = weight_shift_linear(x, w, (u, v), b)
    full = (u @ v.transpose(1, 2))
    assert_close("low-rank", ref.weight_shift_linear(x, w, full, b), got, atol=1e-4, rtol=1e-4)
    grads = torch.autograd.grad(got.sum(), (x, w, u, v, b))
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_low_precision_against_float64(dtype):
    x, w, shift, b = _inputs(2, 17, 33, 20, dtype=dtype, device=TRITON_DEVICE)
    got = weight_shift_linear(x, w, shift, b, backend="triton")
    want = ref.weight_shift_linear(*_float64(x, w, shift, b))
    assert got.dtype == dtype
    assert_rel_close(str(dtype), want, got, dtype)


def test_only_some_gradients():
    x, w, shift, b = _inputs(2, 5, 8, 6, device=TRITON_DEVICE)
    w2 = w.detach().requires_grad_()
    y = weight_shift_linear(x.detach(), w2, shift.detach(), None, backend="triton")
    (gw,) = torch.autograd.grad(y.sum(), (w2,))
    (want,) = torch.autograd.grad(ref.weight_shift_linear(x.detach(), w2, shift.detach()).sum(), (w2,))
    assert_close("dW only", want, gw, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
def test_opcheck(backend):
    x, w, shift, b = (t.detach() for t in _leaves(*_inputs(2, 3, 4, 5)))
    torch.library.opcheck(torch.ops.reactfast.weight_shift.default, (x, w, shift, b, backend))


def test_weight_shift_linear_module():
    layer = WeightShiftLinear(8, 6)
    x = torch.randn(3, 4, 8)
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    zero = torch.zeros(3, 6, 8)
    assert_close("zero shift", layer(x), layer(x, zero), atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch_first", [True, False])
def test_personalize_decoder_layer_equals_copies(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first).eval()
    B = 3
    tgt, mem = torch.randn(B, 6, 32), torch.randn(B, 9, 32)
    if not batch_first:
        tgt, mem = tgt.transpose(0, 1), mem.transpose(0, 1)
    shifts = {"multihead_attn": torch.randn(B, 96, 32) * 0.1, "linear2": torch.randn(B, 32, 64) * 0.1,
              "self_attn": torch.randn(B, 96, 32) * 0.1}
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with personalize(layer, shifts, batch_dim=0 if batch_first else 1):
        out = layer(tgt, mem)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was modified"
    assert "forward" not in layer.multihead_attn.__dict__
    assert isinstance(layer.multihead_attn, WeightShiftMultiheadAttention)
    assert list(layer.state_dict()) == list(before)
    # Outside the block the converted layers compute exactly what they did.
    plain = copy.deepcopy(layer)
    plain.multihead_attn.__class__ = nn.MultiheadAttention
    assert torch.equal(plain(tgt, mem), layer(tgt, mem))
    for b in range(B):
        copy_b = copy.deepcopy(layer)
        with torch.no_grad():
            copy_b.multihead_attn.in_proj_weight += shifts["multihead_attn"][b]
            copy_b.self_attn.in_proj_weight += shifts["self_attn"][b]
            copy_b.linear2.weight += shifts["linear2"][b]
        if batch_first:
            want = copy_b(tgt[b:b + 1], mem[b:b + 1])[0]
            got = out[b]
        else:
            want = copy_b(tgt[:, b:b + 1], mem[:, b:b + 1])[:, 0]
            got = out[:, b]
        assert_close(f"listener {b}", want, got, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("low_rank", [False, True])
def test_personalize_groups_of_samples_share_a_shift(low_rank):
    """G shift entries for a listener-major batch of G x R samples == each entry repeated R times."""
    torch.manual_seed(2)
    layer = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    G, R = 3, 4
    tgt, mem = torch.randn(G * R, 5, 16), torch.randn(G * R, 7, 16)
    if low_rank:
        shift = (torch.randn(G, 48, 2) * 0.3, torch.randn(G, 16, 2) * 0.3)
        rows = tuple(t.repeat_interleave(R, 0) for t in shift)
        lin, lin_rows = (torch.randn(G, 16, 2) * 0.3, torch.randn(G, 32, 2) * 0.3), None
        lin_rows = tuple(t.repeat_interleave(R, 0) for t in lin)
    else:
        shift = torch.randn(G, 48, 16) * 0.1
        rows = shift.repeat_interleave(R, 0)
        lin = torch.randn(G, 16, 32) * 0.1
        lin_rows = lin.repeat_interleave(R, 0)
    grouped = personalized_call(layer, {"multihead_attn": shift, "linear2": lin}, tgt, mem)
    per_sample = personalized_call(layer, {"multihead_attn": rows, "linear2": lin_rows}, tgt, mem)
    assert_close("grouped", per_sample, grouped, atol=1e-5, rtol=1e-5)
    module = WeightShiftLinear(16, 6)
    x = torch.randn(G * R, 5, 16)
    w_shift = torch.randn(G, 6, 16)
    assert_close("WeightShiftLinear groups", module(x, w_shift.repeat_interleave(R, 0)), module(x, w_shift),
                 atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="does not split into 5 equal groups"):
        personalized_call(layer, {"linear2": torch.zeros(5, 16, 32)}, tgt, mem)


def test_personalize_with_masks_and_gradients():
    torch.manual_seed(1)
    layer = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    tgt, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    zero = torch.zeros(2, 48, 16, requires_grad=True)
    out = personalized_call(layer, {"multihead_attn": zero, "self_attn": zero}, tgt, mem, tgt_mask=causal,
                            memory_key_padding_mask=pad)
    assert_close("zero shifts", layer(tgt, mem, tgt_mask=causal, memory_key_padding_mask=pad), out,
                 atol=1e-5, rtol=1e-5)
    (g,) = torch.autograd.grad(out.square().sum(), (zero,))
    assert g.abs().sum() > 0


def test_personalize_errors():
    layer = nn.TransformerDecoderLayer(16, 2, 32, batch_first=True)
    with pytest.raises(KeyError, match="no module named 'decoder.x'"):
        with personalize(layer, {"decoder.x": torch.zeros(1, 16, 16)}):
            pass
    with pytest.raises(ValueError, match=r"must have shape \(2, 48, 16\)"):
        with personalize(layer, {"multihead_attn": torch.zeros(2, 16, 16)}):
            pass
    with pytest.raises(TypeError, match="only nn.Linear and nn.MultiheadAttention"):
        with personalize(layer, {"norm1": torch.zeros(2, 16, 16)}):
            pass
    # A list pair works as the op takes it (AttributeError 'list' object has no attribute 'shape'
    # before); anything else that is no shift is named.
    linear, x = WeightShiftLinear(8, 4), torch.rand(3, 5, 8)
    u, v = torch.rand(3, 4, 2), torch.rand(3, 8, 2)
    assert torch.equal(linear(x, [u, v]), linear(x, (u, v)))
    for bad, got in (([None], "list"), (3.0, "float"), (torch.tensor(1.0), r"shape \(\)")):
        with pytest.raises(TypeError, match=f"shift must be a .* tensor or a pair .* got {got}"):
            linear(x, bad)


@pytest.mark.parametrize("call,err,match", [
    (lambda x, w, s, b: weight_shift_linear(x, w[:, :3], s, b), ValueError, "weight must have shape"),
    (lambda x, w, s, b: weight_shift_linear(x, w, s[:1], b), ValueError, "one weight shift per sample"),
    (lambda x, w, s, b: weight_shift_linear(x, w, s, b[:2]), ValueError, "bias must have shape"),
    (lambda x, w, s, b: weight_shift_linear(x, w, s, b, precision="fp32"), ValueError,
     r"precision must be one of \('tf32x3', 'tf32', 'ieee'\)"),
    (lambda x, w, s, b: weight_shift_linear(x, w, (s[:, :, :2], s[:, :2].transpose(1, 2)), b,
                                            backend="cpp"), ValueError, "no low-rank kernel"),
    (lambda x, w, s, b: weight_shift_linear(x, w, (s[:, :, :2].half(), s[:, :2].transpose(1, 2).half()), b),
     TypeError, "x, weight, U, V and bias must share one dtype"),
    (lambda x, w, s, b: weight_shift_linear(x[0], w, s, b), ValueError, "x must have 3 dimensions"),
    (lambda x, w, s, b: weight_shift_linear(x, w, s.to(torch.int32), b), TypeError, "shift must have dtype"),
    # Mixed dtypes: the C++ kernels read every operand as x's dtype (garbage, or a read past a
    # bfloat16 buffer's end, before this check).
    (lambda x, w, s, b: weight_shift_linear(x, w, s.double(), b), TypeError,
     "x, weight, shift and bias must share one dtype, got float32, float32, float64, float32"),
    (lambda x, w, s, b: weight_shift_linear(x, w.bfloat16(), s, b), TypeError, "must share one dtype"),
    (lambda x, w, s, b: weight_shift_linear(x, w, s, b.bfloat16()), TypeError, "must share one dtype"),
    (lambda x, w, s, b: weight_shift_linear(x, w, (s, s), b), ValueError, "U must be"),
])
def test_bad_input(call, err, match):
    x, w, s, b = (t.detach() for t in _leaves(*_inputs(2, 3, 4, 5)))
    with pytest.raises(err, match=match):
        call(x, w, s, b)


def test_deterministic_mode_uses_the_first_configuration(monkeypatch):
    """Under torch.use_deterministic_algorithms(True) each Triton kernel runs its first candidate
    configuration (warps and stages included), not the autotuner's timed pick."""
    from reactfast.kernels import weight_shift as kern

    seen = []

    class Spy:
        def __init__(self, kernel):
            self.kernel, self.__name__ = kernel, kernel.__name__

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((self.__name__, kwargs["BM"], kwargs["BN"], kwargs["BK"], kwargs.get("num_warps")))
                return self.kernel[grid](*args, **kwargs)
            return launch

    spies = {name: Spy(getattr(kern, name)) for name in ("_weight_shift_fwd_kernel", "_weight_shift_bwd_dx_kernel",
                                                         "_weight_shift_bwd_ddw_kernel")}
    for name, spy in spies.items():
        monkeypatch.setattr(kern, name, spy)
    x, w, shift, b = _inputs(2, 9, 24, 40, device=TRITON_DEVICE)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        y = weight_shift_linear(x, w, shift, b, backend="triton")
        torch.autograd.grad(y.sum(), (x, shift))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert_rel_close("y", ref.weight_shift_linear(*_float64(x, w, shift, b)), y, precision(TRITON_DEVICE))
    first = {"_weight_shift_fwd_kernel": kern.FWD_CONFIGS[0], "_weight_shift_bwd_dx_kernel": kern.DX_CONFIGS[0],
             "_weight_shift_bwd_ddw_kernel": kern.DDW_CONFIGS[0]}
    assert sorted(seen) == sorted((n, c.kwargs["BM"], c.kwargs["BN"], c.kwargs["BK"], c.num_warps)
                                  for n, c in first.items()), seen


@pytest.mark.parametrize("low_rank", [False, True])
def test_eager_calls_skip_the_custom_ops(low_rank, monkeypatch):
    """Eager calls run the implementation and the registered backward through an autograd.Function,
    not the custom ops (whose dispatch cost more host time than a small kernel takes)."""
    import reactfast.ops.weight_shift as wso

    def refuse(*args, **kwargs):
        raise AssertionError("a custom op was called in eager mode")

    for name in ("_fwd", "_bwd", "_low_rank"):
        monkeypatch.setattr(wso, name, refuse)
    x, w, shift, b = _inputs(2, 7, 12, 10, True, seed=3, device=TRITON_DEVICE)
    if low_rank:
        shift = (shift[:, :, :3].detach().clone().requires_grad_(),
                 torch.randn(2, 12, 3, device=TRITON_DEVICE).requires_grad_())
    y = weight_shift_linear(x, w, shift, b, backend="triton")
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    leaves = [x, w] + (list(shift) if low_rank else [shift]) + [b]
    if low_rank:
        u64, v64 = (t.detach().double().requires_grad_() for t in shift)
        want = ref.low_rank_shift_linear(x64, w64, u64, v64, b64)
        leaves64 = [x64, w64, u64, v64, b64]
    else:
        s64 = shift.detach().double().requires_grad_()
        want = ref.weight_shift_linear(x64, w64, s64, b64)
        leaves64 = [x64, w64, s64, b64]
    assert_rel_close("eager y", want, y, precision(TRITON_DEVICE))
    grad = torch.randn_like(want)
    for i, (a, c) in enumerate(zip(torch.autograd.grad(want, leaves64, grad),
                                   torch.autograd.grad(y, leaves, grad.float()))):
        assert_rel_close(f"eager grad {i}", a, c, precision(TRITON_DEVICE))


@needs_cpp
def test_native_calls_refuse_buffers_of_another_element_size():
    """The extension's last line behind the dtype checks: a bfloat16 buffer handed to a kernel that
    reads float32 would be read past its end."""
    x, w, shift = torch.randn(2, 3, 4), torch.randn(5, 4), torch.randn(2, 5, 4)
    y = torch.full((2, 3, 5), float("nan"))
    with pytest.raises(ValueError, match="a buffer of 2-byte elements where the kernel reads 4-byte ones"):
        _backend.native().weight_shift_fwd_cpu(x, w, shift.bfloat16(), None, y, 2, 3, 4, 5)
    assert torch.isnan(y).all()   # nothing written
    _backend.native().weight_shift_fwd_cpu(x, w, shift, None, y, 2, 3, 4, 5)
    assert_rel_close("y", ref.weight_shift_linear(x.double(), w.double(), shift.double()), y, torch.float32)
