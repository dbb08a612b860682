import os
import re

import numpy as np
import pytest
import torch

from reactfast.data import DataError, ReactDataset, SyntheticDyads, layout, window_starts
from reactfast.data import audio as audio_io


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticDyads(sessions=6, frames=120, prototypes=3, listeners=3, audio_dim=8, seed=3)


@pytest.fixture()
def root(tmp_path, synthetic):
    return synthetic.write(str(tmp_path), "val")


def test_reader_equals_in_memory(root, synthetic):
    disk = ReactDataset(root, "val", frames=100)
    mem = synthetic.dataset(frames=100)
    assert len(disk) == len(mem) == 12
    for i in (0, 5, 6, 11):
        a, b = disk[i], mem[i]
        assert a.keys() == b.keys()
        for k in a:
            if k != "listener_id":  # on disk identity comes from the clip folder, in memory from the planted listener
                assert torch.equal(a[k], b[k]), k
    assert disk[0]["speaker_emotion"].shape == (100, 25)
    assert disk[0]["speaker_3dmm"].shape == (100, 58)
    assert disk[0]["speaker_audio"].shape == (200, 8)
    np.testing.assert_array_equal(disk.appropriate, synthetic.appropriate())
    folders = [listener.rsplit("/", 1)[0] for _, listener in disk.dyads]
    assert len(set(disk.listener_ids)) == len(set(folders)) == 12


def test_mirroring_swaps_roles(root):
    ds = ReactDataset(root, "val", frames=50)
    R = len(ds.pairs)
    assert ds.num_items == 2 * R
    assert torch.equal(ds[R + 2]["speaker_emotion"], ds[2]["listener_emotion"])
    assert torch.equal(ds[R + 2]["listener_3dmm"], ds[2]["speaker_3dmm"])
    assert ReactDataset(root, "val", frames=50, mirror=False).num_items == R


def test_windows(root):
    ds = ReactDataset(root, "val", frames=100, window=40, stride=30)
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert len(ds) == 12 * 3
    item = ds[4]
    full = ReactDataset(root, "val", frames=100)[1]
    assert int(item["item"]) == 1 and int(item["start"]) == 30
    assert torch.equal(item["speaker_emotion"], full["speaker_emotion"][30:70])
    assert torch.equal(item["speaker_audio"], full["speaker_audio"][60:140])
    assert len(ReactDataset(root, "val", frames=100, window=40)) == 12 * 2      # stride defaults to the window
    with pytest.raises(ValueError, match="stride must be an int >= 1, got 0"):     # 0 was taken as the window
        ReactDataset(root, "val", frames=100, window=40, stride=0)
    with pytest.raises(ValueError, match=r"stride \(30\) needs a window"):  # it was ignored
        ReactDataset(root, "val", frames=100, stride=30)
    # Non-integers were taken (frames=7.5 until a slice failed at the first item) or failed in range().
    for kwargs, message in ((dict(frames=7.5), "frames must be an int >= 1, got 7.5"),
                            (dict(frames=True), "frames must be an int >= 1, got True"),
                            (dict(window=8.0), "window must be an int >= 1, got 8.0"),
                            (dict(cache_clips=-1), "cache_clips must be an int >= 0, got -1"),
                            (dict(audio_per_frame=2.0), "audio_per_frame must be an int >= 1, got 2.0")):
        with pytest.raises(ValueError, match=re.escape(message)):
            ReactDataset(root, "val", **kwargs)
    assert ReactDataset(root, "val", frames=100, modalities="emotion").modalities == ("emotion",)


def test_stack(root):
    ds = ReactDataset(root, "val", frames=100, modalities=("emotion",))
    assert ds.stack("listener", "emotion").shape == (12, 100, 25)
    with pytest.raises(ValueError, match="modality '3dmm' was not loaded"):
        ds.stack("speaker", "3dmm")


def _clip(root, modality, ext, which=0):
    ds = ReactDataset(root, "val", frames=10)
    return ds._path(modality, ds.pairs[which][0], ext)


def test_missing_file(root):
    path = _clip(root, "emotion", ".csv")
    os.remove(path)
    with pytest.raises(DataError, match="missing file: .*Emotion"):
        ReactDataset(root, "val", frames=10)[0]


def test_wrong_column_count(root):
    path = _clip(root, "emotion", ".csv")
    lines = open(path).read().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:24])
    open(path, "w").write("\n".join(lines))
    with pytest.raises(DataError, match=r"line 6 has 24 columns, expected 25"):
        ReactDataset(root, "val", frames=10)[0]


def test_nan_rows(root):
    path = _clip(root, "3dmm", ".npy")
    arr = np.load(path)
    arr[7, 0, 3] = np.nan
    np.save(path, arr)
    with pytest.raises(DataError, match=r"NaN/Inf values, first in rows \[7\]"):
        ReactDataset(root, "val", frames=10)[0]


def test_truncated_clip(root):
    path = _clip(root, "3dmm", ".npy")
    np.save(path, np.load(path)[:50])
    with pytest.raises(DataError, match="truncated, 50 frames but at least 100"):
        ReactDataset(root, "val", frames=100)[0]


def test_length_mismatch(root):
    path = _clip(root, "3dmm", ".npy")
    np.save(path, np.load(path)[:110])
    with pytest.raises(DataError, match="modalities differ in length"):
        ReactDataset(root, "val", frames=100)[0]


def test_audio_too_short(root):
    path = _clip(root, "audio", ".npy")
    np.save(path, np.load(path)[:150])
    with pytest.raises(DataError, match="truncated, 150 frames but at least 200"):
        ReactDataset(root, "val", frames=100)[0]


def test_empty_neighbour_row(root):
    path = os.path.join(root, layout.neighbour_file("val"))
    m = np.load(path)
    m[4] = 0
    np.save(path, m)
    with pytest.raises(DataError, match=r"rows \[4\] list no appropriate reaction"):
        ReactDataset(root, "val", frames=10).appropriate


def test_neighbour_shape_and_values(root):
    path = os.path.join(root, layout.neighbour_file("val"))
    np.save(path, np.ones((5, 5)))
    with pytest.raises(DataError, match="5 x 5 but the split has 12"):
        ReactDataset(root, "val", frames=10).appropriate
    np.save(path, np.full((12, 12), 0.5))
    with pytest.raises(DataError, match="values must be 0 or 1"):
        ReactDataset(root, "val", frames=10).appropriate


def test_bad_split_csv(root):
    with open(os.path.join(root, "val.csv"), "w") as f:
        f.write("a,b\n1,2\n")
    with pytest.raises(DataError, match="must name speaker_path and listener_path"):
        ReactDataset(root, "val")


def test_bad_arguments(root):
    with pytest.raises(ValueError, match="split must be one of"):
        ReactDataset(root, "dev")
    with pytest.raises(ValueError, match="modalities must be"):
        ReactDataset(root, "val", modalities=("video2",))
    with pytest.raises(ValueError, match="window must be in"):
        ReactDataset(root, "val", frames=100, window=101)
    # A root that is not a path reached os.path.join; an index that is not an int, the range check.
    with pytest.raises(TypeError, match="root must be the data folder"):
        ReactDataset(None, "val")
    with pytest.raises(ValueError, match="mirror must be a bool"):
        ReactDataset(root, "val", mirror="no")
    ds = ReactDataset(root, "val", frames=50)
    for bad in ("0", 1.0, True):
        with pytest.raises(TypeError, match="index must be an int"):
            ds[bad]
    assert torch.equal(ds[np.int64(1)]["listener_emotion"], ds[1]["listener_emotion"])


def _tone_clips(ds, sr=16000, seconds=21 / 25, skip=()):
    """Replace every clip's .npy audio features with a pure-tone .wav."""
    t = np.arange(int(sr * seconds)) / sr
    for clip in {c for pair in ds.pairs for c in pair} - set(skip):
        os.remove(ds._path("audio", clip, ".npy"))
        audio_io.write_wav(ds._path("audio", clip, ".wav"), 0.3 * np.sin(2 * np.pi * 440 * t), sr)


@pytest.mark.parametrize("kind", audio_io.FEATURES)
def test_wav_audio_gives_features(tmp_path, kind):
    root = str(tmp_path)
    SyntheticDyads(sessions=2, frames=30, prototypes=1, seed=0).write(root, "val")
    ds = ReactDataset(root, "val", frames=20, modalities=("audio",), audio_features=kind)
    _tone_clips(ds)
    feats = ds[0]["speaker_audio"]
    assert feats.shape == (40, 39)
    assert torch.isfinite(feats).all()
    # A pure tone: the static cepstra barely change over time, deltas are near zero.
    assert feats[5:35, 13:].abs().mean() < 0.1 * feats[5:35, :13].abs().mean()
    assert ds.audio_features == f"wav -> {kind} features"


def test_mixed_audio_features_are_named(tmp_path):
    root = str(tmp_path)
    SyntheticDyads(sessions=2, frames=30, prototypes=1, seed=0).write(root, "val")
    ds = ReactDataset(root, "val", frames=20, modalities=("audio",))
    _tone_clips(ds, skip=[ds.pairs[0][1]])
    with pytest.raises(DataError, match=r"audio features are \d+-d but clip .* gave \d+-d"):
        [ds[i] for i in range(len(ds))]


def test_in_memory_dataset_checks_its_pairs_and_neighbour_matrix():
    """An in-memory dataset took a neighbour matrix of any shape (one row per pair, not per mirrored
    dyad: training then stopped on an IndexError at the first batch that reached a later row),
    values other than 0/1 as True, and pairs naming clips it did not hold (a KeyError-like
    DataError at the first batch). They are checked as a neighbour file is, when it is made."""
    from reactfast.data import InMemoryReactDataset

    rng = np.random.default_rng(0)
    clips = {f"c{i}": {"emotion": rng.random((40, 25), dtype=np.float32),
                       "3dmm": rng.standard_normal((40, 58), dtype=np.float32),
                       "audio": rng.standard_normal((80, 8), dtype=np.float32)} for i in range(4)}
    pairs = [("c0", "c1"), ("c2", "c3")]
    ds = InMemoryReactDataset(clips, pairs, appropriate=np.eye(4), window=20)
    assert ds.appropriate.dtype == bool and ds.appropriate.tolist() == np.eye(4, dtype=bool).tolist()
    for appropriate, words in ((np.eye(2, dtype=bool), "matrix is 2 x 2 but the split has 4 (mirrored) items"),
                               (np.full((4, 4), 0.5), "values must be 0 or 1"),
                               (np.zeros((4, 4), bool), "rows [0, 1, 2, 3] list no appropriate reaction"),
                               (np.ones(4, bool), "expected a square (N, N) matrix")):
        with pytest.raises(DataError, match=re.escape(f"appropriate: {words}")):
            InMemoryReactDataset(clips, pairs, appropriate=appropriate)
    assert InMemoryReactDataset(clips, pairs, appropriate=np.eye(2, dtype=bool), mirror=False).num_items == 2
    with pytest.raises(DataError, match=re.escape("pairs name clips that clips does not hold: ['c9']")):
        InMemoryReactDataset(clips, [("c0", "c9")])
