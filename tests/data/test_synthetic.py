import numpy as np
import pytest

from reactfast.data import SyntheticConfig, SyntheticDyads, layout


def test_deterministic_under_seed():
    a = SyntheticDyads(sessions=4, frames=60, seed=7).clips()
    b = SyntheticDyads(sessions=4, frames=60, seed=7).clips()
    c = SyntheticDyads(sessions=4, frames=60, seed=8).clips()
    for clip in a:
        for m in a[clip]:
            np.testing.assert_array_equal(a[clip][m], b[clip][m])
    assert any(not np.array_equal(a[k]["emotion"], c[k]["emotion"]) for k in a)


def test_emotion_ranges():
    s = SyntheticDyads(sessions=6, frames=200, seed=0)
    for data in s.clips().values():
        e = data["emotion"]
        assert set(np.unique(e[:, layout.AU])) <= {0.0, 1.0}
        assert np.abs(e[:, layout.VA]).max() <= 1.0
        np.testing.assert_allclose(e[:, layout.EXPRESSION].sum(1), 1.0, atol=1e-5)
        assert data["3dmm"].shape == (200, 58)
        assert data["audio"].shape == (400, s.config.audio_dim)


def test_appropriateness_from_construction():
    s = SyntheticDyads(sessions=12, frames=300, prototypes=3, listeners=4, seed=1)
    A = s.appropriate()
    assert A.shape == (24, 24) and A.diagonal().all() and (A.sum(1) == 4).all()
    # Listener reactions to the same prototype resemble each other more than across prototypes.
    ds = s.dataset(mirror=True, frames=300)
    listener = ds.stack("listener", "emotion")[:12].numpy()
    feats = listener[:, :, 15:17].mean(1)
    same = [np.linalg.norm(feats[i] - feats[j]) for i in range(12) for j in range(12) if i != j and A[i, j]]
    diff = [np.linalg.norm(feats[i] - feats[j]) for i in range(12) for j in range(12) if not A[i, j]]
    assert np.mean(same) < np.mean(diff)


def test_listener_style_delay_visible():
    s = SyntheticDyads(sessions=2, frames=400, seed=2, noise=0.0)
    r = 0
    style = s.styles[s.listener_id[r]]
    spk, lst = s.speaker_latent[r], s.listener_latent[r]
    lags = range(0, 40)
    corr = [np.corrcoef(spk[: 400 - lag, 0], lst[lag:, 0])[0, 1] for lag in lags]
    assert int(np.argmax(corr)) >= style.delay


def test_bad_config():
    with pytest.raises(ValueError, match="sessions must be an int >= 1"):
        SyntheticConfig(sessions=0)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        SyntheticDyads(noise=-1.0)


def test_config_takes_integers_only():
    """A float session count failed inside numpy ("expected a sequence of integers"), and a str seed
    in SeedSequence; numpy integers are taken as ints."""
    with pytest.raises(ValueError, match="sessions must be an int >= 1, got 1.5"):
        SyntheticConfig(sessions=1.5)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got 'a'"):
        SyntheticConfig(seed="a")
    with pytest.raises(ValueError, match="noise must be a finite number >= 0, got nan"):
        SyntheticConfig(noise=float("nan"))
    import numpy as np

    config = SyntheticConfig(sessions=np.int64(2), frames=np.int32(30))
    assert type(config.sessions) is int and config.frames == 30
