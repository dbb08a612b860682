"""Constants of the REACT 2023/2024 challenge data layout (SPEC section 1)."""

FPS = 25
CLIP_FRAMES = 751
EVAL_FRAMES = 750
EMOTION_DIM = 25
TDMM_DIM = 58
AUDIO_SAMPLES_PER_FRAME = 2

AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14", "AU15", "AU17",
            "AU23", "AU24", "AU25", "AU26")
EXPRESSIONS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
EMOTION_COLUMNS = AU_NAMES + ("Valence", "Arousal") + EXPRESSIONS
AU = slice(0, 15)
VA = slice(15, 17)
EXPRESSION = slice(17, 25)
TDMM_EXPRESSION = slice(0, 52)
TDMM_POSE = slice(52, 58)

SPLITS = ("train", "val", "test")
MODALITY_DIRS = {
    "video": "Video_files",
    "audio": "Audio_files",
    "emotion": "Emotion",
    "3dmm": "3D_FV_files",
}


def neighbour_file(split: str) -> str:
    return f"neighbour_emotion_{split}.npy"


def _torch_eps(dtype) -> float:
    import torch

    return float(torch.finfo(dtype).eps)


def check_emotion(emotion, tolerance: float = 1e-4) -> dict:
    """Counts of emotion values outside their valid ranges in (..., 25) features: AUs outside [0, 1],
    valence/arousal outside [-1, 1], negative expression probabilities, and frames whose 8
    probabilities do not sum to 1 (within ``tolerance``; wider for fp16/bf16 tensors, by their
    rounding). Torch tensors are counted on their device (float32 CPU tensors and arrays by the C++
    kernel of ``reactfast.ops.emotion_range``). An empty dict when everything is in range."""
    import numpy as np
    import torch

    from reactfast.ops._checks import check_real
    from reactfast.ops.emotion_range import emotion_range_counts_unchecked

    tolerance = check_real("tolerance", tolerance)
    if isinstance(emotion, torch.Tensor):   # counted where it lies (no copy to the host)
        e = emotion.detach()
        if not e.is_floating_point() or e.element_size() < 4:
            # Half-precision values are rounded by up to eps each: allow that in the sums.
            if e.is_floating_point():
                tolerance = max(tolerance, 8 * _torch_eps(e.dtype))
            e = e.float()
    else:
        e = np.asarray(emotion)
        if e.dtype.kind not in "fiub":
            raise TypeError(f"emotion must hold numbers (a float array or tensor (..., {EMOTION_DIM})), got "
                            f"{type(emotion).__name__} of dtype {e.dtype}")
        e = torch.from_numpy(np.ascontiguousarray(e if e.dtype == np.float32 else e.astype(np.float64)))
    if e.dim() < 1 or e.shape[-1] != EMOTION_DIM:
        raise ValueError(f"emotion must have {EMOTION_DIM} dims in its last axis, got shape {tuple(e.shape)}")
    counts = emotion_range_counts_unchecked(e, float(tolerance)).tolist()
    names = ("AU below 0", "AU above 1", "valence/arousal outside [-1, 1]", "negative expression probabilities",
             "expression rows not summing to 1")
    return {name: n for name, n in zip(names, counts) if n}
