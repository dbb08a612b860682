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


def check_emotion(emotion, tolerance: float = 1e-4) -> dict:
    """Counts of emotion values outside their valid ranges in (..., 25) features: AUs outside [0, 1],
    valence/arousal outside [-1, 1], negative expression probabilities, and frames whose 8
    probabilities do not sum to 1 (within ``tolerance``). An empty dict when everything is in range."""
    import numpy as np

    e = np.asarray(emotion.detach().cpu() if hasattr(emotion, "detach") else emotion, dtype=np.float64)
    if e.shape[-1] != EMOTION_DIM:
        raise ValueError(f"emotion must have {EMOTION_DIM} dims in its last axis, got shape {e.shape}")
    au, va, ex = e[..., AU], e[..., VA], e[..., EXPRESSION]
    counts = {"AU below 0": int((au < -tolerance).sum()), "AU above 1": int((au > 1 + tolerance).sum()),
              "valence/arousal outside [-1, 1]": int((np.abs(va) > 1 + tolerance).sum()),
              "negative expression probabilities": int((ex < -tolerance).sum()),
              "expression rows not summing to 1": int((np.abs(ex.sum(-1) - 1) > tolerance).sum())}
    return {k: v for k, v in counts.items() if v}
