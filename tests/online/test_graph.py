"""Streaming on a CUDA graph: ReactFace's and PFLPosNet's steps never read a value back to the host on the GPU
path (checked on any device: Triton through the interpreter where there is no GPU), and
StreamRunner(graph=True) gives what the eager runner gives. Without a GPU the capture is replaced
by a re-run that replays into the first run's buffers, which catches a step reading anything but
its input buffers; with one, the real CUDA graph runs."""

import pytest
import torch

from reactfast import _backend
from reactfast.online import ReactionStream, StreamRunner
from reactfast.testing import HostReadError, assert_close, forbid_host_reads
from tests.conftest import TRITON_DEVICE
from tests.models.test_perfrdiff import tiny as tiny_perfrdiff
from tests.models.test_pflposnet import _tiny_pfl
from tests.models.test_reactface import inputs, tiny

MODELS = {"reactface": tiny, "pflposnet": lambda device="cpu": _tiny_pfl().to(device)}


def _rerun_on_replay(fn, device):
    first = fn()
    out, state = first

    def replay():
        new_out, new_state = fn()
        for key, value in new_out.items():
            out[key].copy_(value)
        for name in state.__dataclass_fields__:
            value = getattr(state, name)
            if isinstance(value, torch.Tensor):
                value.copy_(getattr(new_state, name))

    return replay, first


@pytest.mark.parametrize("name", sorted(MODELS))
def test_step_reads_nothing_back(name):
    device = torch.device(TRITON_DEVICE)
    model = MODELS[name](device).eval()
    assert model.graph_capturable
    model.set_backend("biased_attention:triton")
    speaker, audio = inputs(B=1, T=24, device=device)
    stream = ReactionStream(model, 3, torch.Generator().manual_seed(0))
    S = 3
    with torch.no_grad():
        state = stream.state
        for t in range(3):
            sp, au = speaker[0, 8 * t:8 * t + 8][None].expand(S, -1, -1), audio[0, 16 * t:16 * t + 16][None].expand(
                S, -1, -1)
            if t == 0:  # the first step fills the per-layout caches, as a capture's warm-up does
                _, state = model.step(state, sp, au, stream.noise())
                continue
            with _backend.graph_safe(), forbid_host_reads():
                _, state = model.step(state, sp, au, stream.noise())
    # The check itself: a host read inside the guarded region raises.
    with pytest.raises(HostReadError, match="_local_scalar_dense"):
        with forbid_host_reads():
            bool(state.count.sum() > 0)



def test_forbid_host_reads_catches_mask_indexing_and_counted_repeats():
    """Reads that happen inside an op (below the dispatcher): a boolean-mask index finds its
    elements on the host, repeat_interleave by a tensor of counts sizes its result from them."""
    x = torch.randn(3, 4)
    mask, counts = torch.rand(4) > 0.5, torch.tensor([1, 2, 0])
    for read in (lambda: x[:, mask], lambda: x[mask[:3]], lambda: torch.repeat_interleave(x, counts, 0)):
        with pytest.raises(HostReadError, match="index|repeat_interleave"):
            with forbid_host_reads():
                read()
    with forbid_host_reads():  # index tensors and counts with the result's size read nothing
        x[:, torch.arange(2)]
        x.index_select(1, torch.arange(2))
        torch.repeat_interleave(x, counts, 0, output_size=3)
        x.repeat_interleave(2, 0)

def _staggered(model, runner, speaker, audio, device):
    streams = [ReactionStream(model, s, torch.Generator().manual_seed(10 + i)) for i, s in enumerate((2, 1, 2))]
    outs = {i: [] for i in range(3)}
    for step in range(6):
        for i, stream in enumerate(streams):
            t = step - i
            if 0 <= t < 4:
                stream.feed(speaker[i, 8 * t:8 * t + 8], audio[i, 16 * t:16 * t + 16])
        for i, res in enumerate(runner.step(streams)):
            if res is not None:
                outs[i].append(res["3dmm"])
    return {i: torch.cat(o, 1) for i, o in outs.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_graphed_runner_equals_eager(device, name):
    model = MODELS[name](device).eval()
    speaker, audio = inputs(B=3, T=32, device=device)
    eager = _staggered(model, StreamRunner(model), speaker, audio, device)
    capture = None if device.type == "cuda" else _rerun_on_replay
    runner = StreamRunner(model, graph=True, capture=capture)
    graphed = _staggered(model, runner, speaker, audio, device)
    for i in range(3):
        assert eager[i].shape == graphed[i].shape == (eager[i].shape[0], 32, 58)
        if device.type == "cpu":
            assert torch.equal(eager[i], graphed[i]), i
        else:
            assert_close(f"stream {i}", eager[i], graphed[i], atol=1e-5, rtol=1e-5)
    # Batch layouts seen: (2), (2, 1), (2, 1, 2), (1, 2), (2): one capture each, reused.
    assert len(runner._graphs) == 4
    runner.clear_graphs()
    assert not runner._graphs


def test_graph_option_errors():
    model = tiny().eval()
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        StreamRunner(model, graph=True)
    with pytest.raises(ValueError, match="eval mode"):
        StreamRunner(tiny().train(), graph=True, capture=_rerun_on_replay)
    with pytest.raises(ValueError, match="not known to be capturable"):
        StreamRunner(tiny_perfrdiff().eval(), graph=True, capture=_rerun_on_replay)


def _rerun_loop(fn, device):
    out = fn()
    return (lambda: out.copy_(fn())), out


@pytest.mark.parametrize("guidance", [None, 2.0])
def test_perfrdiff_sampling_on_captured_loops_equals_eager(device, monkeypatch, guidance):
    """PerFRDiff with sample_cuda_graph: the loop captured once per shape and replayed with new
    conditions, noise and listeners' shifts (copied into the capture's buffers) equals the eager
    loop; the condition cache is recomputed inside every recorded run (its reset)."""
    model = tiny_perfrdiff(sample_cuda_graph=True).eval().to(device)
    if device.type == "cpu":
        model.graph_capture = _rerun_loop  # on the instance: this model only
    eager = tiny_perfrdiff().eval().to(device)
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    for trial in range(3):
        history = torch.randn(2, 12, 58, generator=g).to(device)
        with torch.no_grad():
            shifts = model.shifts_for(history)
        cond = torch.randn(6, cfg.window, cfg.cond_dim, generator=g).to(device)
        noise = torch.randn(6, cfg.window, cfg.out_dim, generator=g).to(device)
        want = eager.sample_windows(cond, noise, shifts, guidance)
        got = model.sample_windows(cond, noise, shifts, guidance)
        if device.type == "cpu":
            assert torch.equal(want, got), trial
        else:
            assert_close(f"trial {trial}", want, got, atol=1e-5, rtol=1e-5)
    assert len(model.sampler_graphs()) == 1
    model.sampler_graphs().clear()


def test_reactdiff_sampling_on_captured_loops_equals_eager(device, monkeypatch):
    from tests.models.test_reactdiff import tiny as tiny_reactdiff

    model = tiny_reactdiff(sample_cuda_graph=True).eval().to(device)
    if device.type == "cpu":
        monkeypatch.setattr(type(model), "graph_capture", _rerun_loop)  # on the class: a plain function
    eager = tiny_reactdiff().eval().to(device)
    for seed in (1, 2):
        speaker = torch.rand(2, 20, 25, generator=torch.Generator().manual_seed(seed)).to(device)
        audio = torch.randn(2, 40, 4, generator=torch.Generator().manual_seed(seed)).to(device)
        want = eager.generate(speaker, audio, 2, torch.Generator().manual_seed(seed))
        got = model.generate(speaker, audio, 2, torch.Generator().manual_seed(seed))
        for key in want:
            if device.type == "cpu":
                assert torch.equal(want[key], got[key]), key
            else:
                assert_close(key, want[key], got[key], atol=1e-5, rtol=1e-5)
    assert len(model.sampler_graphs()) == 1
    import copy

    assert len(copy.deepcopy(model).sampler_graphs()) == 0  # captures are not copied
