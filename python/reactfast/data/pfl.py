"""PFL, pose-aware face behaviour localisation (PFLPosNet, SPEC 4.4): one fixed crop window per
video from its per-frame face boxes, so cropped clips keep the head's motion.

Boxes are (x, y, w, h) with (x, y) the box centre (as the paper's formula reads). The window is
centred on the mean box centre with
    w_c = min(omega_w, max_i(x_i + w_i / 2) - min_i(x_i - w_i / 2)),  h_c likewise.
Clipping rule for windows that leave the frame: the window keeps its size and is shifted inside
the frame; a window larger than the frame is reduced to the frame. Pixel coordinates are rounded
to the nearest integer (half away from zero).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from reactfast.ops._checks import check_bool, check_int, check_real


def _pair(name: str, value, integer: bool, what: str) -> Tuple:
    """``value`` as a pair: one number for both sides, or two; each checked by ``check_int`` (>= 1)
    or ``check_real`` (finite, > 0); errors name the argument and what it is."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist()
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    try:
        if len(items) != 2:
            raise ValueError
        return tuple(check_int(name, v) if integer else check_real(name, v, strict=True) for v in items)
    except ValueError:
        kind = "integers >= 1" if integer else "finite numbers > 0"
        raise ValueError(f"{name} must be {what}: one or two {kind}, got {value!r}") from None


def crop_window(boxes, omega: Tuple[float, float] = (256.0, 256.0),
                frame_size: Optional[Tuple[int, int]] = None) -> Tuple[int, int, int, int]:
    """The fixed window (left, top, width, height) in pixels for one video's boxes (T, 4).

    Args:
        boxes: per-frame face boxes (x_centre, y_centre, w, h), shape (T, 4), T >= 1.
        omega: (omega_w, omega_h), the largest window (256 x 256 in the paper); one number for both.
        frame_size: (height, width) of the frames; when given, the window is clipped to them.
    """
    try:
        b = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"boxes must be (T, 4) numbers x_centre, y_centre, w, h, got {type(boxes).__name__} "
                         f"{boxes!r:.80}") from None
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
        raise ValueError(f"boxes must have shape (T, 4) with T >= 1, got {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("boxes contain NaN or Inf")
    if (b[:, 2:] <= 0).any():
        raise ValueError("boxes must have positive width and height")
    omega = _pair("omega", omega, False, "the largest window (width, height)")
    if frame_size is not None:
        frame_size = _pair("frame_size", frame_size, True, "the frames' (height, width)")
    x, y, w, h = b.T
    cx, cy = x.mean(), y.mean()
    wc = min(omega[0], (x + w / 2).max() - (x - w / 2).min())
    hc = min(omega[1], (y + h / 2).max() - (y - h / 2).min())
    left, top = cx - wc / 2, cy - hc / 2
    r = lambda v: int(np.sign(v) * np.floor(abs(v) + 0.5))  # noqa: E731
    left, top, wc, hc = r(left), r(top), r(wc), r(hc)
    if frame_size is not None:
        H, W = frame_size
        wc, hc = min(wc, W), min(hc, H)
        left = min(max(left, 0), W - wc)
        top = min(max(top, 0), H - hc)
    return left, top, max(wc, 1), max(hc, 1)


def crop_video(video: torch.Tensor, boxes, omega: Tuple[float, float] = (256.0, 256.0),
               out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Crop every frame of each video with its PFL window.

    Args:
        video: (T, C, H, W) or a batch (B, T, C, H, W).
        boxes: (T, 4) or (B, T, 4) face boxes per frame.
        out_size: (height, width) to resize each cropped clip to (needed to batch videos whose
            windows differ), or one int for a square; None keeps the window's size.

    Returns:
        (T, C, h, w) or (B, T, C, h, w).
    """
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(np.ascontiguousarray(video))
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"video must be a torch.Tensor or numpy array, got {type(video).__name__}")
    if video.dim() in (4, 5) and 0 in video.shape[-2:]:
        raise ValueError(f"video frames must hold pixels, got shape {tuple(video.shape)}")
    if out_size is not None:
        out_size = _pair("out_size", out_size, True, "the crops' (height, width)")
    single = video.dim() == 4
    if single:
        video, boxes = video[None], [boxes]
    if video.dim() != 5:
        raise ValueError(f"video must be (T, C, H, W) or (B, T, C, H, W), got {tuple(video.shape)}")
    if not isinstance(boxes, (list, tuple, np.ndarray, torch.Tensor)) or (
            isinstance(boxes, (np.ndarray, torch.Tensor)) and boxes.ndim == 0):
        raise TypeError(f"boxes must be a (T, 4) array per video, got {type(boxes).__name__}")
    if len(boxes) != video.shape[0]:
        raise ValueError(f"boxes must hold one (T, 4) array per video ({video.shape[0]}), got {len(boxes)}")
    H, W = video.shape[-2:]
    crops = []
    for clip, bx in zip(video, boxes):
        left, top, wc, hc = crop_window(bx, omega, (H, W))    # checks bx: (T, 4) numbers
        if len(bx) != clip.shape[0]:
            raise ValueError(f"boxes have {len(bx)} frames but the video has {clip.shape[0]}")
        c = clip[..., top:top + hc, left:left + wc]
        if out_size is not None:
            c = F.interpolate(c.float(), size=out_size, mode="bilinear", align_corners=False).to(clip.dtype)
        crops.append(c)
    if len({tuple(c.shape) for c in crops}) > 1:
        raise ValueError("the videos' windows differ in size; pass out_size to resize them to one size")
    out = torch.stack(crops)
    return out[0] if single else out


def read_boxes(path: str) -> np.ndarray:
    """Face boxes (T, 4) from a .npy file or a csv of x,y,w,h rows (a header row allowed)."""
    from reactfast.data.files import DataError, load_npy

    if path.endswith(".npy"):
        boxes = load_npy(path).astype(np.float64)
    else:
        try:
            with open(path) as f:
                rows = [line.split(",") for line in f.read().splitlines() if line.strip()]
            try:
                [float(c) for c in rows[0]]
            except (ValueError, IndexError):
                rows = rows[1:]  # a header row
            boxes = np.asarray([[float(c) for c in r] for r in rows], dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read face boxes as x,y,w,h rows ({exc})") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{path}: face boxes must be (frames, 4) x, y, w, h; got shape {boxes.shape}")
    return boxes


def _numbered_frames(folder: str):
    """The ``<n>.png`` frames of ``folder`` in frame order."""
    import os

    return sorted((f for f in os.listdir(folder) if f.endswith(".png") and f[:-4].isdigit()), key=lambda f: int(f[:-4]))


def crop_frames(src: str, boxes, dst: str, omega: Tuple[float, float] = (256.0, 256.0),
                out_size: Optional[Tuple[int, int]] = None, overwrite: bool = False) -> Tuple[int, int, int, int]:
    """PFL for a clip's frame folder in the REACT layout (``1.png`` ... ``T.png``): one fixed,
    pose-preserving crop window from the boxes (T, 4), every frame cropped with it (and resized to
    ``out_size`` (height, width), or one int for a square, when given) into ``dst``. The crops keep
    the frames' pixel format (8-bit RGB stays 8-bit RGB; without resizing, the pixels are the
    source's). A ``dst`` that already holds numbered frames is refused unless ``overwrite``, which
    first removes them (a longer clip cropped there before would leave frames past this one's
    end). Returns the window (left, top, w, h)."""
    import os

    from PIL import Image

    from reactfast.data.files import DataError

    check_bool("overwrite", overwrite)
    if not os.path.isdir(src):
        raise DataError(f"{src}: not a folder of frames (1.png, 2.png, ...)")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise DataError(f"{dst}: exists and is not a folder (the cropped frames' destination)")
    if os.path.isdir(dst) and os.path.samefile(src, dst):
        raise DataError(f"{dst}: is the source folder; the crops would replace the frames they come from")
    if out_size is not None:
        out_size = _pair("out_size", out_size, True, "the crops' (height, width)")
    names = _numbered_frames(src)
    if not names:
        raise DataError(f"{src}: no numbered .png frames (1.png, 2.png, ...)")
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) != len(names):
        raise DataError(f"{src}: {len(names)} frames but {len(boxes)} face boxes")
    held = _numbered_frames(dst) if os.path.isdir(dst) else []
    if held and not overwrite:
        raise DataError(f"{dst}: already holds {len(held)} numbered frames; give another folder, or overwrite "
                        "(--overwrite) to replace them")
    with Image.open(os.path.join(src, names[0])) as first:
        shape = (first.height, first.width)
    window = crop_window(boxes, omega, shape)
    left, top, w, h = window
    for name in held:
        os.remove(os.path.join(dst, name))
    os.makedirs(dst, exist_ok=True)
    for name in names:
        with Image.open(os.path.join(src, name)) as image:
            if (image.height, image.width) != shape:
                raise DataError(f"{os.path.join(src, name)}: {image.width} x {image.height} pixels, but "
                                f"{names[0]} has {shape[1]} x {shape[0]}: one crop window needs frames of one size")
            if image.mode not in ("L", "LA", "RGB", "RGBA", "I;16"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")   # palette, CMYK, ...
            pixels = np.asarray(image)[top:top + h, left:left + w]
        if out_size is not None:
            frame = torch.from_numpy(pixels.astype(np.float32))
            chw = frame.permute(2, 0, 1)[None] if frame.dim() == 3 else frame[None, None]
            resized = F.interpolate(chw, size=out_size, mode="bilinear", align_corners=False)[0]
            resized = resized.permute(1, 2, 0) if frame.dim() == 3 else resized[0]
            limit = np.iinfo(pixels.dtype).max
            pixels = np.clip(np.rint(resized.numpy()), 0, limit).astype(pixels.dtype)
        Image.fromarray(np.ascontiguousarray(pixels)).save(os.path.join(dst, name))   # (the mode follows)
    return window
