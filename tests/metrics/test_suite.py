"""The metric suite against the reference definitions, and its input validation."""

import warnings

import numpy as np
import pytest
import torch

from reactfast import metrics
from reactfast.reference import metrics as ref
from reactfast.reference import spread as spread_ref


def make_case(seed, N, S, T, density=0.3):
    rng = np.random.default_rng(seed)
    pred = rng.random((N, S, T, 25)).astype(np.float32)
    pred[..., :15] = pred[..., :15] > 0.6
    gt = rng.random((N, T, 25)).astype(np.float32)
    gt[..., :15] = gt[..., :15] > 0.6
    speaker = rng.random((N, T, 25)).astype(np.float32)
    gt[0, :, 5] = 1.0                      # constant column (CCC's NaN -> 0 rule)
    pred[0, 0, : T // 2, 20] = 0.125       # constant stretch: NaN at some TLCC lags
    speaker[1, :, 2] = 0.0                 # constant speaker column: NaN rs everywhere for item 1
    if N > 3:
        gt[3] = gt[2]                      # duplicate reactions: ties in the min/max
    appropriate = rng.random((N, N)) < density
    np.fill_diagonal(appropriate, True)
    return pred, gt, speaker, appropriate


@pytest.mark.parametrize("fn", [metrics.frcorr, metrics.frdist])
def test_rows_add_up(fn):
    """``rows``: disjoint row sets add up to the metric, whatever the chunking (consecutive rows
    go to the kernels as a view, others by index); a repeated row counts once per listing."""
    pred, gt, _, appropriate = make_case(7, 9, 2, 40)
    whole = fn(pred, gt, appropriate)
    parts = [fn(pred, gt, appropriate, rows=rows, chunk=2) for rows in ([0, 1, 2, 3], [4, 6, 8], [5, 7])]
    assert sum(parts) == pytest.approx(whole, rel=1e-12)
    one, three = fn(pred, gt, appropriate, rows=[1]), fn(pred, gt, appropriate, rows=[3])
    assert fn(pred, gt, appropriate, rows=[1, 1, 3]) == pytest.approx(2 * one + three, rel=1e-12)


@pytest.mark.parametrize("N,S,T", [(8, 3, 60), (30, 2, 40), (6, 1, 97), (4, 2, 750)])
def test_evaluate_matches_reference(N, S, T):
    pred, gt, speaker, appropriate = make_case(N * 100 + T, N, S, T)
    fast = metrics.evaluate(pred, gt, speaker, appropriate)
    slow = ref.evaluate(pred, gt, speaker, appropriate)
    assert fast.keys() == slow.keys() == set(metrics.METRICS)
    for name in fast:
        if name == "FRSyn":
            assert fast[name] == slow[name]
        else:
            assert fast[name] == pytest.approx(slow[name], rel=1e-6, abs=1e-9), name


def test_torch_inputs_and_float_matrix():
    pred, gt, speaker, appropriate = make_case(1, 6, 2, 50)
    a = metrics.evaluate(pred, gt, speaker, appropriate)
    b = metrics.evaluate(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(speaker),
                         torch.from_numpy(appropriate.astype(np.float32)))
    assert a == b


def test_a_model_output_that_carries_its_graph_is_scored_without_torch_warnings():
    """A pred with requires_grad (a model's output as it came) got torch's "Converting a tensor with
    requires_grad=True to a scalar" warning from the range check; the values are what is scored."""
    pred, gt, speaker, appropriate = make_case(2, 5, 2, 40)
    expected = metrics.evaluate(pred, gt, speaker, appropriate)
    live = torch.from_numpy(pred).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert metrics.evaluate(live * 1, torch.from_numpy(gt), speaker, appropriate) == expected


def test_single_sample_and_single_speaker():
    pred, gt, speaker, appropriate = make_case(2, 5, 1, 30)
    assert metrics.frdiv(pred) == 0.0
    assert metrics.frdvs(pred[:1]) == 0.0


def test_frsyn_all_samples_variant():
    pred, gt, speaker, _ = make_case(3, 5, 4, 120)
    first = metrics.frsyn(pred, speaker)
    every = metrics.frsyn(pred, speaker, all_samples=True)
    assert first == ref.frsyn(pred, speaker)
    assert every == ref.frsyn(pred, speaker, all_samples=True)
    # Sample 0 of each speaker copies the speaker with a 7-frame delay: offset 7, except item 1
    # whose speaker has a constant column, so every rs is NaN and the first NaN (offset 49) wins.
    shifted = pred.copy()
    shifted[:, 0] = np.roll(speaker, 7, axis=1)
    assert metrics.frsyn(shifted, speaker) == (4 * 7 + 49) / 5


def test_frsyn_needs_the_speaker_first_and_warns_on_clips_shorter_than_its_lags(monkeypatch):
    pred, gt, speaker, appropriate = make_case(4, 4, 2, 40)
    # A missing speaker failed at FRSyn, the last metric, after FRCorr and FRDist had been computed.
    monkeypatch.setattr(metrics, "_frcorr", lambda *a, **k: pytest.fail("FRCorr computed before the check"))
    for call in (lambda: metrics.evaluate(pred, gt, None, appropriate), lambda: metrics.frsyn(pred, None)):
        with pytest.raises(TypeError, match="speaker must be a numpy array or torch tensor"):
            call()
    # 40 frames and lags up to 49: every curve has NaN ends, so every offset is 49 (the official rule).
    with pytest.warns(RuntimeWarning, match="clips of 40 frames are shorter than the lag range needs"):
        assert metrics.frsyn(pred, speaker) == 49.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.frsyn(pred, speaker, max_lag=38)          # 40 frames hold lags up to 38



@pytest.mark.parametrize("how", ["spec", "env"])
def test_a_forced_backend_that_cannot_run_fails_before_the_first_metric(monkeypatch, how):
    """A backend forced for a later metric's op that cannot take the inputs (dtw's CUDA kernel, for
    FRDist, on CPU tensors) raised only when that metric's turn came, after the earlier ones had
    been computed (minutes at the challenge's scale); now before FRCorr, whether named by
    ``backend=`` or by REACTFAST_BACKEND."""
    pred, gt, speaker, appropriate = make_case(4, 4, 2, 40)
    monkeypatch.setattr(metrics, "_frcorr", lambda *a, **k: pytest.fail("FRCorr computed before the check"))
    if how == "env":
        monkeypatch.setenv("REACTFAST_BACKEND", "dtw:cuda")
    with pytest.raises(RuntimeError, match="dtw: backend 'cuda' was forced but cannot run"):
        metrics.evaluate(pred, gt, speaker, appropriate, backend="ccc:cpp,dtw:cuda" if how == "spec" else None)


def test_perfect_prediction_scores():
    pred, gt, speaker, appropriate = make_case(4, 6, 2, 80)
    exact = np.repeat(gt[:, None], 2, axis=1)
    scores = metrics.evaluate(exact, gt, speaker, np.eye(6, dtype=bool))
    assert scores["FRDist"] == 0.0
    assert scores["FRDiv"] == 0.0
    ccc_self = metrics.frcorr(exact, gt, np.eye(6, dtype=bool))
    assert 1.9 < ccc_self <= 2.0  # S = 2 samples, each CCC ~ 1 (less the constant column)


def test_chunking_does_not_change_results():
    pred, gt, speaker, appropriate = make_case(5, 9, 2, 40)
    assert metrics.frdist(pred, gt, appropriate, chunk=2) == metrics.frdist(pred, gt, appropriate, chunk=64)
    assert metrics.frcorr(pred, gt, appropriate, chunk=1) == pytest.approx(metrics.frcorr(pred, gt, appropriate))


@pytest.mark.parametrize("backend", ["cpp", "reference"])
@pytest.mark.parametrize("chunk", [1, 2 * 40 * 25 * 3])
def test_spread_metrics_in_speaker_chunks(monkeypatch, chunk, backend):
    """FRDiv, FRDvs and FRVar on each backend (the reference over float64 chunks of one or three
    speakers) equal the reference definitions; evaluate gives the same values."""
    pred = make_case(7, 8, 2, 40)[0]
    monkeypatch.setattr(spread_ref, "_CHUNK", chunk)
    monkeypatch.setenv("REACTFAST_BACKEND", f"spread:{backend}")
    for fast, slow in ((metrics.frdiv, ref.frdiv), (metrics.frdvs, ref.frdvs), (metrics.frvar, ref.frvar)):
        assert fast(pred) == pytest.approx(slow(pred), rel=1e-12), fast.__name__
    scores = metrics.evaluate(*make_case(7, 8, 2, 40), backend=f"spread:{backend}")
    for name, slow in (("FRDiv", ref.frdiv), ("FRDvs", ref.frdvs), ("FRVar", ref.frvar)):
        assert scores[name] == pytest.approx(slow(pred), rel=1e-12), name


def _bad(**change):
    pred, gt, speaker, appropriate = make_case(6, 4, 2, 20)
    args = dict(pred=pred, listener_gt=gt, speaker=speaker, appropriate=appropriate)
    args.update(change)
    return args


@pytest.mark.parametrize("change,err,match", [
    (dict(pred=np.zeros((4, 2, 20, 24), np.float32)), ValueError, "pred must have 25 emotion dims"),
    (dict(pred=np.zeros((4, 20, 25), np.float32)), ValueError, "pred must have 4 dimensions"),
    (dict(listener_gt=np.zeros((3, 20, 25), np.float32)), ValueError, r"listener_gt must have shape \(4, 20, 25\)"),
    (dict(speaker=np.zeros((4, 21, 25), np.float32)), ValueError, r"speaker must have shape \(4, 20, 25\)"),
    (dict(pred=np.zeros((4, 0, 20, 25), np.float32)), ValueError, "pred must not be empty"),
    (dict(pred=np.zeros((4, 2, 0, 25), np.float32)), ValueError, "pred must not be empty"),
    (dict(pred=np.full((4, 2, 20, 25), np.nan, np.float32)), ValueError, "pred contains NaN or Inf"),
    (dict(speaker=np.full((4, 20, 25), np.inf, np.float32)), ValueError, "speaker contains NaN or Inf"),
    (dict(appropriate=np.eye(3, dtype=bool)), ValueError, r"appropriate must have shape \(4, 4\)"),
    (dict(appropriate=np.full((4, 4), 0.5)), ValueError, "boolean or hold only 0 and 1"),
    (dict(appropriate=np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)), ValueError,
     r"rows \[1\] are empty"),
    (dict(pred=np.zeros((4, 2, 20, 25), np.int64)), TypeError, "pred must be a float array"),
    (dict(pred=[[0.0]]), TypeError, "pred must be a numpy array or torch tensor"),
])
def test_bad_input(change, err, match):
    with pytest.raises(err, match=match):
        metrics.evaluate(**_bad(**change))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_is_rejected(bad):
    """The input check reads only the extremes (one aminmax pass): a single NaN or Inf among finite
    values must still be caught, in every input."""
    for name in ("pred", "listener_gt", "speaker"):
        args = _bad()
        x = args[name].copy()
        x.reshape(-1)[x.size // 2 + 3] = bad
        args[name] = x
        with pytest.raises(ValueError, match=f"{name} contains NaN or Inf"):
            metrics.evaluate(**args)


@pytest.mark.parametrize("value", [-3e15, 3e15])
def test_values_beyond_float32_statistics_are_rejected(value):
    """A value whose float32 sums of squares over the frames would overflow is refused by name, of
    either sign (the check reads it from the extremes)."""
    args = _bad()
    pred = args["pred"].copy()
    pred[1, 0, 5, 7] = value
    args["pred"] = pred
    with pytest.raises(ValueError, match="pred holds values up to 3e"):
        metrics.evaluate(**args)
