"""``reactfast data check``: validate a REACT 2024 data folder and summarise it, naming every problem."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from reactfast.data import audio as audio_io
from reactfast.data import files, layout
from reactfast.data.files import DataError
from reactfast.ops._checks import check_path


@dataclass
class SplitReport:
    split: str
    dyads: int = 0
    clips: int = 0
    frames: Dict[str, List[int]] = field(default_factory=dict)
    audio: str = ""
    density: float = float("nan")
    problems: List[str] = field(default_factory=list)


def _clip_files(root: str, split: str, clip: str) -> Dict[str, str]:
    base = os.path.join(root, split)
    return {"emotion": os.path.join(base, layout.MODALITY_DIRS["emotion"], clip + ".csv"),
            "3dmm": os.path.join(base, layout.MODALITY_DIRS["3dmm"], clip + ".npy"),
            "audio": os.path.join(base, layout.MODALITY_DIRS["audio"], clip + ".npy"),
            "wav": os.path.join(base, layout.MODALITY_DIRS["audio"], clip + ".wav")}


def check_split(root: str, split: str, max_problems: int = 50) -> SplitReport:
    """Read every clip a split lists (emotion, 3DMM, audio) and its neighbour matrix."""
    check_path("root", root, "be the data folder's path")
    report = SplitReport(split)
    problem = report.problems.append
    try:
        pairs = files.read_split(os.path.join(root, f"{split}.csv"))
    except DataError as exc:
        problem(str(exc))
        return report
    report.dyads = 2 * len(pairs)
    clips = sorted({c for pair in pairs for c in pair})
    report.clips = len(clips)
    widths = set()
    for clip in clips:
        paths = _clip_files(root, split, clip)
        lengths = {}
        for modality, read in (("emotion", files.read_emotion), ("3dmm", files.read_3dmm)):
            try:
                lengths[modality] = len(read(paths[modality]))
            except DataError as exc:
                problem(str(exc))
        try:
            if os.path.isfile(paths["audio"]):
                feats = files.read_audio_features(paths["audio"])
                widths.add(f"{feats.shape[1]}-d features (.npy)")
                lengths["audio"] = len(feats) // layout.AUDIO_SAMPLES_PER_FRAME
            elif os.path.isfile(paths["wav"]):
                samples, sr = audio_io.read_wav(paths["wav"])
                widths.add(f"wav at {sr} Hz")
                lengths["audio"] = int(len(samples) / sr * layout.FPS)
            else:
                problem(f"missing file: {paths['audio']} (or {paths['wav']})")
        except DataError as exc:
            problem(str(exc))
        for modality, n in lengths.items():
            report.frames.setdefault(modality, []).append(n)
        if len(set(lengths.values())) > 1:
            problem(f"clip {clip}: modalities differ in length ({lengths})")
        if len(report.problems) >= max_problems:
            problem(f"... stopped after {max_problems} problems")
            return report
    if len(widths) > 1:
        problem(f"clips mix audio features: {sorted(widths)}")
    report.audio = ", ".join(sorted(widths))
    try:
        matrix = files.read_neighbours(os.path.join(root, layout.neighbour_file(split)), report.dyads)
        report.density = float(matrix.mean())
    except DataError as exc:
        problem(str(exc))
    return report


def check_folder(root: str, splits: Sequence[str] = layout.SPLITS) -> List[SplitReport]:
    """A report per split present (a split whose csv is missing is reported only if asked for)."""
    check_path("root", root, "be the data folder's path")
    if not os.path.isdir(root):
        raise DataError(f"no such data folder: {root}")
    present = [s for s in splits if os.path.isfile(os.path.join(root, f"{s}.csv"))]
    if not present:
        raise DataError(f"{root}: none of {', '.join(f'{s}.csv' for s in splits)} is there; is this the REACT "
                        "data folder (the one holding train.csv, val.csv, test.csv)?")
    return [check_split(root, s) for s in present]


def format_reports(reports: List[SplitReport]) -> str:
    lines = [f"{'split':6s} {'dyads':>6s} {'clips':>6s} {'frames (min-max)':>18s} {'neighbours':>10s}  audio"]
    for r in reports:
        counts = [n for values in r.frames.values() for n in values]
        span = f"{min(counts)}-{max(counts)}" if counts else "-"
        density = "-" if np.isnan(r.density) else f"{r.density:.1%}"
        lines.append(f"{r.split:6s} {r.dyads:6d} {r.clips:6d} {span:>18s} {density:>10s}  {r.audio or '-'}")
    for r in reports:
        for p in r.problems:
            lines.append(f"problem [{r.split}]: {p}")
    total = sum(len(r.problems) for r in reports)
    lines.append(f"{total} problem(s)" if total else "no problems found")
    return "\n".join(lines)
