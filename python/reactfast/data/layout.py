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


def _torch_abs(x):
    return x.abs()


def _torch_count(mask) -> int:
    import torch

    return int(torch.count_nonzero(mask))  # a boolean mask's sum() is 5x slower on strided views


def _torch_eps(dtype) -> float:
    import torch

    return float(torch.finfo(dtype).eps)


def _extremes_in_range(au, va, ex, tolerance: float) -> bool:
    """Whether every value is in range, from the groups' extremes and the expression rows' sums
    (reductions without a temporary the size of the input): the common case costs a few passes
    instead of the counts' masks. NaN fails every comparison, so it takes the counting path."""
    def extremes(x):
        if hasattr(x, "detach"):
            import torch

            lo, hi = torch.aminmax(x)
            return float(lo), float(hi)
        return float(x.min()), float(x.max())

    au_lo, au_hi = extremes(au)
    if not (au_lo >= -tolerance and au_hi <= 1 + tolerance):
        return False
    va_lo, va_hi = extremes(va)
    if not (va_lo >= -1 - tolerance and va_hi <= 1 + tolerance):
        return False
    if not extremes(ex)[0] >= -tolerance:
        return False
    row_lo, row_hi = extremes(ex.sum(-1) - 1)
    return row_lo >= -tolerance and row_hi <= tolerance


def check_emotion(emotion, tolerance: float = 1e-4) -> dict:
    """Counts of emotion values outside their valid ranges in (..., 25) features: AUs outside [0, 1],
    valence/arousal outside [-1, 1], negative expression probabilities, and frames whose 8
    probabilities do not sum to 1 (within ``tolerance``; wider for fp16/bf16 tensors, by their
    rounding). Torch tensors are counted on their device. An empty dict when everything is in range."""
    if hasattr(emotion, "detach"):          # a torch tensor: counted where it lies (no copy to the host)
        e = emotion.detach()
        if not e.is_floating_point() or e.element_size() < 4:
            # Half-precision values are rounded by up to eps each: allow that in the sums.
            if e.is_floating_point():
                tolerance = max(tolerance, 8 * _torch_eps(e.dtype))
            e = e.float()
        absolute, count = _torch_abs, _torch_count
    else:
        import numpy as np

        e = np.asarray(emotion, dtype=np.float64)
        absolute, count = np.abs, np.count_nonzero
    if e.shape[-1] != EMOTION_DIM:
        raise ValueError(f"emotion must have {EMOTION_DIM} dims in its last axis, got shape {tuple(e.shape)}")
    au, va, ex = e[..., AU], e[..., VA], e[..., EXPRESSION]
    if e.size and _extremes_in_range(au, va, ex, tolerance):
        return {}
    counts = {"AU below 0": count(au < -tolerance), "AU above 1": count(au > 1 + tolerance),
              "valence/arousal outside [-1, 1]": count(absolute(va) > 1 + tolerance),
              "negative expression probabilities": count(ex < -tolerance),
              "expression rows not summing to 1": count(absolute(ex.sum(-1) - 1) > tolerance)}
    return {k: int(v) for k, v in counts.items() if v}
