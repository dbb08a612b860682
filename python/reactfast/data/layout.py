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
