import pytest
import torch

from reactfast import _backend, diffusion
from reactfast.diffusion import DDIMScheduler, SamplerGraph, betas_for, sample
from reactfast.ops.ddim import IMPLEMENTED, ddim_step
from reactfast.reference.ddim import ddim_step as ddim_ref
from reactfast.testing import assert_close, assert_rel_close, forbid_host_reads
from tests.conftest import HAS_CUDA, TRITON_DEVICE, usable_backends


def _case(prediction, eta, guided, seed=0, shape=(6, 7, 25), device="cpu"):
    g = torch.Generator().manual_seed(seed)
    sched = DDIMScheduler(1000, "cosine", prediction=prediction, eta=eta)
    B = shape[0]
    t = torch.randint(1, 1000, (B,), generator=g)
    t_prev = t - torch.randint(1, 60, (B,), generator=g)      # mixed per-sample steps, some final (< 0)
    coef = sched.step_coefficients(t, t_prev).to(device)
    mk = lambda: torch.randn(shape, generator=g).to(device)  # noqa: E731
    x, out = mk(), mk()
    un = mk() if guided else None
    z = mk() if eta > 0 else None
    return sched, coef, x, out, un, z


def _f64(*tensors):
    return [None if t is None else t.double() for t in tensors]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("clip,from_clipped", [(None, False), (1.0, False), (1.0, True)])
@pytest.mark.parametrize("guided", [False, True])
def test_every_backend_matches_float64_reference(device, prediction, eta, clip, from_clipped, guided):
    _, coef, x, out, un, z = _case(prediction, eta, guided, device=device)
    x64, out64, un64, z64 = _f64(x, out, un, z)
    want = ddim_ref(x64, out64, coef, prediction, un64, 7.5, z64, clip, from_clipped)
    for backend in usable_backends(IMPLEMENTED, device):
        got = ddim_step(x, out, coef, prediction, un, 7.5, z, clip, from_clipped, backend=backend)
        for name, a, b in zip(("x_prev", "x0"), want, got):
            assert b.dtype == torch.float32 and b.device.type == device.type
            assert_rel_close(f"{backend} {name}", a, b, torch.float32)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_inputs_that_require_grad_are_differentiated_through_the_reference(device, prediction, monkeypatch):
    """The kernel computes values only: the automatic choice on CUDA returned a result with no graph
    (a loss through a DDIM step trained without its gradient); now a gradient goes through the
    reference's maths, and the kernel named for it refuses."""
    _, coef, x, out, un, z = _case(prediction, 0.7, True, device=device)
    out, un = out.clone().requires_grad_(), un.clone().requires_grad_()
    x_prev, x0 = ddim_step(x, out, coef, prediction, un, 7.5, z, 1.0)
    weights = torch.randn_like(x_prev)
    grads = torch.autograd.grad((x_prev * weights).sum() + x0.sum(), (out, un))
    o64, u64 = out.detach().double().requires_grad_(), un.detach().double().requires_grad_()
    w_prev, w0 = ddim_ref(x.double(), o64, coef, prediction, u64, 7.5, z.double(), 1.0)
    wants = torch.autograd.grad((w_prev * weights.double()).sum() + w0.sum(), (o64, u64))
    for name, want, got in zip(("out_cond", "out_uncond"), wants, grads):
        assert got.abs().sum() > 0
        assert_rel_close(f"d {name}", want, got, torch.float32)
    for backend in usable_backends(IMPLEMENTED, device):
        if backend != "reference":
            with pytest.raises(RuntimeError, match="ddim: the inputs require grad, but its kernels compute values"):
                ddim_step(x, out, coef, prediction, un, 7.5, z, 1.0, backend=backend)
            monkeypatch.setenv("REACTFAST_BACKEND", f"ddim:{backend}")     # forced by the environment: the same
            with pytest.raises(RuntimeError, match="ddim: the inputs require grad, but its kernels compute values"):
                ddim_step(x, out, coef, prediction, un, 7.5, z, 1.0)
            monkeypatch.delenv("REACTFAST_BACKEND")
    with torch.no_grad():
        assert not ddim_step(x, out, coef, prediction, un, 7.5, z, 1.0)[0].requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_odd_sizes_and_dtypes(dtype):
    _, coef, x, out, _, _ = _case("eps", 0.0, False, shape=(3, 97, 7), device=TRITON_DEVICE)
    xd, od = x.to(dtype), out.to(dtype)
    want = ddim_ref(xd.double(), od.double(), coef)[0]
    got = ddim_step(xd, od, coef, backend="triton")[0]
    assert got.dtype == dtype
    assert_rel_close(f"triton {dtype}", want, got, dtype)


def test_true_noise_reproduces_forward_process():
    sched = DDIMScheduler(1000, "cosine", prediction="eps", clip=None)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 50, 25, generator=g)
    noise = torch.randn(4, 50, 25, generator=g)
    t = torch.tensor([980, 500, 40, 21])
    t_prev = torch.tensor([960, 480, 20, 1])
    x_t = sched.add_noise(x0, noise, t)
    x_prev, x0_hat = sched.step(noise, t, x_t, t_prev)
    assert_close("x0", x0, x0_hat, atol=1e-4, rtol=1e-4)
    assert_close("x_prev", sched.add_noise(x0, noise, t_prev), x_prev, atol=1e-4, rtol=1e-4)
    # x0 and v predictions of the true quantities agree too.
    ab = sched.alphas_cumprod[t].reshape(-1, 1, 1).float()
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    for prediction, out in (("x0", x0), ("v", v)):
        s = DDIMScheduler(1000, "cosine", prediction=prediction, clip=None)
        assert_close(prediction, sched.add_noise(x0, noise, t_prev), s.step(out, t, x_t, t_prev)[0],
                     atol=1e-4, rtol=1e-4)


def test_final_step_alpha():
    t, t_prev = torch.tensor([0]), torch.tensor([-20])
    one = DDIMScheduler(1000, final_alpha_one=True).step_coefficients(t, t_prev)
    first = DDIMScheduler(1000, final_alpha_one=False)
    assert float(one[0, 2]) == 1.0
    assert float(first.step_coefficients(t, t_prev)[0, 2]) == pytest.approx(float(first.alphas_cumprod[0].sqrt()))


def test_timestep_spacings():
    assert DDIMScheduler(1000, spacing="leading").timesteps(50).tolist() == list(range(980, -1, -20))
    assert DDIMScheduler(1000, spacing="trailing").timesteps(50).tolist() == list(range(999, 18, -20))
    assert DDIMScheduler(20).timesteps(20).tolist() == list(range(19, -1, -1))


def test_schedules():
    cos = betas_for("cosine", 1000)
    assert float(cos.max()) == pytest.approx(0.999)
    lin = betas_for("linear", 1000)
    assert float(lin[0]) == pytest.approx(1e-4) and float(lin[-1]) == pytest.approx(0.02)
    ac = DDIMScheduler(1000, "cosine").alphas_cumprod
    assert (ac[1:] < ac[:-1]).all() and 0.99 < float(ac[0]) <= 1.0


def test_sample_deterministic_and_guided(device):
    sched = DDIMScheduler(100, "cosine", prediction="x0")
    weight = (torch.randn(25, 25, generator=torch.Generator().manual_seed(0)) * 0.1).to(device)

    def denoiser(x, t, cond):
        return torch.tanh(x @ weight + cond)

    cond = (torch.randn(30, 50, 25, generator=torch.Generator().manual_seed(1)) * 0.1).to(device)
    gen = lambda seed: torch.Generator(device=device).manual_seed(seed)  # noqa: E731
    a = sample(denoiser, (30, 50, 25), cond, sched, steps=10, guidance_scale=2.0, generator=gen(3))
    b = sample(denoiser, (30, 50, 25), cond, sched, steps=10, guidance_scale=2.0, generator=gen(3))
    c = sample(denoiser, (30, 50, 25), cond, sched, steps=10, guidance_scale=2.0, generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.device.type == device.type and a.abs().max() <= 1.0
    # The loop equals explicit steps through the float64 reference.
    x = torch.randn(30, 50, 25, generator=gen(3), device=device).double()
    for t_int in sched.timesteps(10).tolist():
        t = torch.full((30,), t_int)
        coef = sched.step_coefficients(t, t - 10).to(device)
        c_out, u_out = denoiser(x.float(), t, cond).double(), denoiser(x.float(), t, torch.zeros_like(cond)).double()
        x = ddim_ref(x, c_out, coef, "x0", u_out, 2.0, None, 1.0)[0]
    assert_rel_close("loop", x, a, 1e-5)


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("eta,guided", [(0.0, True), (0.5, False)])
def test_sample_on_a_cuda_graph_equals_eager(eta, guided):
    sched = DDIMScheduler(100, "cosine", prediction="eps", eta=eta)
    net = torch.nn.Sequential(torch.nn.Linear(25, 64), torch.nn.GELU(), torch.nn.Linear(64, 25)).cuda()

    def denoiser(x, t, cond):
        return net(x + cond) * (1.0 + t[:, None, None].float() / 1000)

    cond = torch.randn(16, 50, 25, device="cuda") * 0.1
    kw = dict(guidance_scale=3.0 if guided else None, steps=20)
    eager = sample(denoiser, (16, 50, 25), cond, sched, generator=torch.Generator("cuda").manual_seed(0), **kw)
    graphed = sample(denoiser, (16, 50, 25), cond, sched, generator=torch.Generator("cuda").manual_seed(0),
                     cuda_graph=True, **kw)
    assert_rel_close("cuda graph", eager.double(), graphed, 1e-6)


def _rerun_on_replay(fn, device):
    """A stand-in for a CUDA graph: replay re-runs the loop into the first run's output tensor, so a
    loop that read anything but the graph's input buffers would replay stale data."""
    out = fn()
    return (lambda: out.copy_(fn())), out


@pytest.mark.parametrize("eta,guided,prediction", [(0.0, True, "x0"), (0.5, False, "eps"), (0.3, True, "eps")])
def test_sampler_graph_replays_new_inputs_like_eager(eta, guided, prediction):
    """SamplerGraph's buffers and replay (the capture replaced by a re-run): successive calls with
    new conditions, noise and null conditions equal eager sample() with the same arguments."""
    sched = DDIMScheduler(100, "cosine", prediction=prediction, eta=eta)
    weight = torch.randn(25, 25, generator=torch.Generator().manual_seed(0)) * 0.2

    def denoiser(x, t, cond):
        return torch.tanh(x @ weight + cond) * (1.0 + t[:, None, None].float() / 1000)

    kw = dict(steps=12, guidance_scale=2.5 if guided else None)
    g = torch.Generator().manual_seed(1)
    example = torch.randn(6, 10, 25, generator=g)
    graph = SamplerGraph(denoiser, (6, 10, 25), example, sched, device="cpu", capture=_rerun_on_replay, **kw)
    for seed in (2, 3):
        cond = torch.randn(6, 10, 25, generator=g) * 0.3
        null = torch.randn(1, 10, 25, generator=g) * 0.1 if guided and seed == 3 else None
        want = sample(denoiser, (6, 10, 25), cond, sched, null_cond=null, generator=torch.Generator().manual_seed(seed),
                      **kw)
        got = graph(cond, null_cond=null, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(want, got), seed
    noise = torch.randn(6, 10, 25, generator=g)
    if eta == 0:
        assert torch.equal(graph(cond, noise=noise), sample(denoiser, (6, 10, 25), cond, sched, noise=noise, **kw))
    with pytest.raises(ValueError, match="captured shape"):
        graph(torch.randn(6, 11, 25))
    with pytest.raises(ValueError, match="a CUDA graph needs a CUDA device"):
        SamplerGraph(denoiser, (6, 10, 25), example, sched, device="cpu", **kw)


def test_sampler_graph_keeps_what_its_graph_reads_alive():
    """A CUDA graph reads the tensors its loop was recorded with (timesteps, coefficients) at every
    replay, and holds no reference to them: the SamplerGraph must. A stand-in capture that keeps
    only a weak reference to the recorded function fails if nothing else does (on an H100 that
    memory went to later allocations: NaN or wrong samples)."""
    import gc
    import weakref

    def weak_capture(fn, device):
        recorded = weakref.ref(fn)
        out = fn()

        def replay():
            fn = recorded()
            assert fn is not None, "the recorded loop (and the tensors it reads) was freed"
            out.copy_(fn())
        return replay, out

    sched = DDIMScheduler(100, "cosine", prediction="eps", eta=0.5)
    weight = torch.randn(25, 25, generator=torch.Generator().manual_seed(0)) * 0.2

    def denoiser(x, t, cond):
        return torch.tanh(x @ weight + cond)

    cond = torch.randn(4, 10, 25, generator=torch.Generator().manual_seed(1))
    graph = SamplerGraph(denoiser, (4, 10, 25), cond, sched, steps=6, guidance_scale=2.0, device="cpu",
                         capture=weak_capture)
    gc.collect()
    got = graph(cond, generator=torch.Generator().manual_seed(2))
    want = sample(denoiser, (4, 10, 25), cond, sched, steps=6, guidance_scale=2.0,
                  generator=torch.Generator().manual_seed(2))
    assert torch.equal(want, got)


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA graphs need a GPU")
def test_capture_cuda_graph_keeps_the_recorded_tensors_alive():
    """A tensor only the recorded function refers to is still read correctly after the function is
    dropped, garbage collected and its memory offered to new allocations."""
    import gc

    def make():
        table = torch.arange(4096, dtype=torch.float32, device="cuda")
        x = torch.zeros(4096, device="cuda")
        return (lambda: x * 2 + table), x

    fn, x = make()
    replay, out = diffusion.capture_cuda_graph(fn, "cuda")
    del fn
    gc.collect()
    junk = [torch.full((4096,), float("nan"), device="cuda") for _ in range(8)]
    x.fill_(1.0)
    replay()
    assert torch.equal(out, torch.arange(4096, dtype=torch.float32, device="cuda") + 2), junk[0][0]


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA graphs need a GPU")
def test_sample_cuda_graph_is_captured_once_per_denoiser_and_shape():
    """sample(cuda_graph=True) keeps one captured loop per denoiser object and shape; each replay
    equals the eager loop for its own noise."""
    sched = DDIMScheduler(100, "cosine", prediction="eps")
    net = torch.nn.Sequential(torch.nn.Linear(25, 64), torch.nn.GELU(), torch.nn.Linear(64, 25)).cuda()

    def denoiser(x, t, c):
        return net(x + c)

    diffusion.clear_graphs()
    for seed in range(3):
        cond = torch.randn(8, 50, 25, device="cuda")
        eager = sample(denoiser, (8, 50, 25), cond, sched, steps=10, guidance_scale=2.0,
                       generator=torch.Generator("cuda").manual_seed(seed))
        graphed = sample(denoiser, (8, 50, 25), cond, sched, steps=10, guidance_scale=2.0, cuda_graph=True,
                         generator=torch.Generator("cuda").manual_seed(seed))
        assert_rel_close("cuda graph", eager.double(), graphed, 1e-6)
    assert len(diffusion._GRAPHS[denoiser]) == 1
    sample(denoiser, (4, 50, 25), cond[:4], sched, steps=10, guidance_scale=2.0, cuda_graph=True)
    assert len(diffusion._GRAPHS[denoiser]) == 2
    diffusion.clear_graphs()


def test_sample_with_eta_is_deterministic(device):
    sched = DDIMScheduler(50, prediction="eps", eta=1.0)
    den = lambda x, t, c: 0.1 * x  # noqa: E731
    a = sample(den, (4, 8), None, sched, steps=5, generator=torch.Generator(device).manual_seed(0), device=device)
    b = sample(den, (4, 8), None, sched, steps=5, generator=torch.Generator(device).manual_seed(0), device=device)
    assert torch.equal(a, b) and a.device.type == device.type



def test_scheduler_step_reads_nothing_back_where_the_host_may_not():
    """DDIMScheduler.step (per-sample timesteps, as a user's own loop calls it) checks its timesteps
    on the host only where it may: on CUDA tensors, or under a capture (graph_safe), it reads
    nothing, and gives the same result."""
    sched = DDIMScheduler(50, prediction="eps")
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    t, t_prev = torch.tensor([40, 20, 5]), torch.tensor([30, 10, -1])
    want = sched.step(eps, t, x, t_prev)
    with _backend.graph_safe(), forbid_host_reads():
        got = sched.step(eps, t, x, t_prev)
    assert all(torch.equal(a, b) for a, b in zip(want, got))

@pytest.mark.parametrize("call,err,match", [
    (lambda s: s.timesteps(2000), ValueError, r"steps must be an int in \[1, 1000\]"),
    (lambda s: DDIMScheduler(schedule="sigmoid"), ValueError, "schedule must be one of"),
    (lambda s: DDIMScheduler(prediction="score"), ValueError, "prediction must be one of"),
    (lambda s: DDIMScheduler(spacing="middle"), ValueError, "spacing must be one of"),
    (lambda s: s.add_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1000])), ValueError,
     r"t must lie in \[0, 1000\)"),
    (lambda s: s.step_coefficients(torch.tensor([5]), torch.tensor([7])), ValueError, "smaller than t"),
    (lambda s: ddim_step(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 5)), ValueError,
     "out_cond must have x_t's shape"),
    (lambda s: ddim_step(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 5)), ValueError, "coef must have shape"),
    (lambda s: ddim_step(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 5), prediction="z"), ValueError,
     "prediction must be one of"),
    (lambda s: s.step(torch.zeros(2, 3), torch.tensor([1.5, 2.0]), torch.zeros(2, 3), torch.tensor([0, 0])),
     TypeError, "integer timesteps"),
    # sample's arguments, named before the loop (each failed inside it, or was taken as true)
    (lambda s: sample(lambda x, t, c: x, (2, 3), scheduler=s, steps=5, cuda_graph="no"), ValueError,
     "cuda_graph must be a bool, got 'no'"),
    (lambda s: sample(lambda x, t, c: x, (2, 3), scheduler=s, steps=5, progress="no"), ValueError,
     "progress must be a bool"),
    (lambda s: sample(lambda x, t, c: x, (2, 3), scheduler="ddim", steps=5), TypeError,
     "scheduler must be a DDIMScheduler or None, got str"),
    (lambda s: sample(lambda x, t, c: x, (2, 3), scheduler=s, steps=5, generator=3), TypeError,
     "generator must be a torch.Generator or None, got int"),
    (lambda s: sample(lambda x, t, c: x, (2, 3), scheduler=s, steps=5, dtype=torch.int64), TypeError,
     "dtype must be a floating-point torch.dtype"),
    (lambda s: sample(lambda x, t, c: x, (2, 3), scheduler=s, steps=5, device="tpu"), ValueError,
     "device must be a torch device"),
    (lambda s: sample(lambda x, t, c: x, "ab", scheduler=s, steps=5), ValueError,
     "shape must be a non-empty tuple of positive ints, got 'ab'"),
    (lambda s: sample(5, (2, 3), scheduler=s, steps=5), TypeError, "denoiser must be callable"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call(DDIMScheduler(1000))


def test_tree_helpers_walk_the_same_nests():
    """clone_tree, copy_tree and tree_signature over tensors in dicts, tuples, lists and dataclasses:
    the clone is a copy, the copy writes in place, and the signature (a cache key) is hashable and
    tells shapes and dtypes apart."""
    import dataclasses

    from reactfast.diffusion import clone_tree, copy_tree, tree_signature

    @dataclasses.dataclass
    class Box:
        a: torch.Tensor
        rows: tuple = ()

    tree = {"x": torch.randn(3, 2), "y": (torch.randn(4), [Box(torch.randn(2, 2), (1, 2))])}
    clone = clone_tree(tree)
    assert clone["y"][1][0].a is not tree["y"][1][0].a and torch.equal(clone["y"][1][0].a, tree["y"][1][0].a)
    other = clone_tree(tree)
    other["y"][1][0].a.normal_()
    copy_tree(clone, other)
    assert torch.equal(clone["y"][1][0].a, other["y"][1][0].a)
    key = tree_signature(tree)
    assert hash(key) == hash(tree_signature(clone))
    changed = clone_tree(tree)
    changed["y"][1][0].a = torch.randn(2, 3)
    assert tree_signature(changed) != key
    assert tree_signature({"x": torch.randn(3, 2, dtype=torch.float64)}) != tree_signature({"x": tree["x"]})


@pytest.mark.parametrize("kwargs,words", [
    (dict(schedule="linear", beta_start=0.5, beta_end=0.1), "0 < beta_start <= beta_end < 1"),
    (dict(schedule="linear", beta_start=-1e-4), "0 < beta_start <= beta_end < 1"),     # NaN samples before
    (dict(schedule="linear", beta_end=1.0), "0 < beta_start <= beta_end < 1"),
    (dict(schedule="cosine", max_beta=1.5), r"max_beta in \(0, 1\)"),
    (dict(schedule="cosine", num_train_steps=0), "num_train_steps must be an int >= 1"),
])
def test_schedule_parameters_are_checked(kwargs, words):
    from reactfast.diffusion import betas_for

    args = dict(num_train_steps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        betas_for(**args)


@pytest.mark.parametrize("kwargs,words", [
    (dict(eta=float("nan")), "eta must be a finite number >= 0, got nan"),       # NaN samples before
    (dict(eta="0.5"), "eta must be a finite number >= 0, got '0.5'"),             # a comparison TypeError
    (dict(clip=-1.0), "clip must be None or a finite number > 0, got -1.0"),     # every x0 became -1 before
    (dict(clip=float("nan")), "clip must be None or a finite number > 0, got nan"),
    (dict(clip=0), "clip must be None or a finite number > 0, got 0"),
])
def test_scheduler_sampling_parameters_are_checked(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DDIMScheduler(10, **kwargs)
