import pytest
import torch

from reactfast.diffusion import DDIMScheduler, betas_for, sample
from reactfast.ops.ddim import ddim_step
from reactfast.reference.ddim import ddim_step as ddim_ref
from reactfast.testing import assert_close


def _case(prediction, eta, guided, seed=0, shape=(6, 7, 25)):
    g = torch.Generator().manual_seed(seed)
    sched = DDIMScheduler(1000, "cosine", prediction=prediction, eta=eta)
    B = shape[0]
    t = torch.randint(1, 1000, (B,), generator=g)
    t_prev = t - torch.randint(1, 60, (B,), generator=g)      # mixed per-sample steps, some final (< 0)
    coef = sched.step_coefficients(t, t_prev)
    x = torch.randn(shape, generator=g)
    out = torch.randn(shape, generator=g)
    un = torch.randn(shape, generator=g) if guided else None
    z = torch.randn(shape, generator=g) if eta > 0 else None
    return sched, coef, x, out, un, z


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("clip,from_clipped", [(None, False), (1.0, False), (1.0, True)])
@pytest.mark.parametrize("guided", [False, True])
def test_fused_step_matches_reference(prediction, eta, clip, from_clipped, guided):
    _, coef, x, out, un, z = _case(prediction, eta, guided)
    want = ddim_ref(x, out, coef, prediction, un, 7.5, z, clip, from_clipped)
    got = ddim_step(x, out, coef, prediction, un, 7.5, z, clip, from_clipped, backend="triton")
    for name, a, b in zip(("x_prev", "x0"), want, got):
        assert_close(name, a, b, atol=2e-5, rtol=2e-5)


def test_odd_sizes_and_half():
    _, coef, x, out, _, _ = _case("eps", 0.0, False, shape=(3, 97, 7))
    assert_close("odd", ddim_ref(x, out, coef)[0], ddim_step(x, out, coef, backend="triton")[0], atol=1e-5, rtol=1e-5)
    xb, ob = x.bfloat16(), out.bfloat16()
    got = ddim_step(xb, ob, coef, backend="triton")[0]
    assert got.dtype == torch.bfloat16
    assert_close("bf16", ddim_ref(xb.float(), ob.float(), coef)[0], got.float(), atol=3e-2, rtol=3e-2)


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


def test_sample_deterministic_and_guided():
    sched = DDIMScheduler(100, "cosine", prediction="x0")
    weight = torch.randn(25, 25) * 0.1

    def denoiser(x, t, cond):
        return torch.tanh(x @ weight + cond)

    cond = torch.randn(30, 50, 25) * 0.1
    a = sample(denoiser, (30, 50, 25), cond, sched, steps=10, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(3))
    b = sample(denoiser, (30, 50, 25), cond, sched, steps=10, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(3))
    c = sample(denoiser, (30, 50, 25), cond, sched, steps=10, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0
    # The loop equals explicit steps through the reference.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(30, 50, 25, generator=gen)
    for t_int in sched.timesteps(10).tolist():
        t = torch.full((30,), t_int)
        c_out, u_out = denoiser(x, t, cond), denoiser(x, t, torch.zeros_like(cond))
        x = ddim_ref(x, c_out, sched.step_coefficients(t, t - 10), "x0", u_out, 2.0, None, 1.0)[0]
    assert_close("loop", x, a, atol=1e-5, rtol=1e-5)


def test_sample_with_eta_is_deterministic():
    sched = DDIMScheduler(50, prediction="eps", eta=1.0)
    den = lambda x, t, c: 0.1 * x  # noqa: E731
    a = sample(den, (4, 8), None, sched, steps=5, generator=torch.Generator().manual_seed(0))
    b = sample(den, (4, 8), None, sched, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


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
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call(DDIMScheduler(1000))
