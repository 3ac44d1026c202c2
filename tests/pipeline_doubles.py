"""Stand-in face and motion stages for pipeline tests: they implement the pipeline's FaceStage / MotionStage /
EnhancerStage protocols with simple arithmetic, so the pipeline's own plumbing (render, paste-back, encoding,
options, progress) is what the tests exercise."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from sadtalker.engines.sadtalker.paste import CropInfo

FRAME_SAMPLES = 640  # 16 kHz / 25 fps


@dataclass
class StubFace:
    crop: np.ndarray
    crop_info: CropInfo
    coeffs73: np.ndarray
    coeffs257: np.ndarray = field(default_factory=lambda: np.zeros(257, np.float32))


def face_geometry(height: int, width: int, preprocess: str) -> CropInfo:
    """A plausible crop box and quad for a centred face (the real extractor finds them from landmarks)."""
    if preprocess == "resize":
        return CropInfo(size=(width, height))
    box = (width // 8, height // 10, width - width // 8, height - height // 20)
    qw, qh = (box[2] - box[0]) * 3 // 4, (box[3] - box[1]) * 3 // 4
    quad = (float((box[2] - box[0] - qw) // 2), float((box[3] - box[1] - qh) // 3),
            float((box[2] - box[0] + qw) // 2), float((box[3] - box[1] - qh) // 3 + qh))
    return CropInfo(size=(int(quad[2] - quad[0]), int(quad[3] - quad[1])), box=box, quad=quad)


class StandInFaceStage:
    """Crops the picture at fixed proportions; coefficients are small and deterministic."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.video_calls: list[tuple[int, str]] = []

    def extract(self, image: np.ndarray, preprocess: str, size: int) -> StubFace:
        self.calls.append((preprocess, size))
        h, w = image.shape[:2]
        info = face_geometry(h, w, preprocess)
        if info.box is None:
            region = image
        elif preprocess.startswith("ext"):
            x1, y1, x2, y2 = info.box
            region = image[y1:y2, x1:x2]
        else:
            x1, y1 = info.box[0] + int(info.quad[0]), info.box[1] + int(info.quad[1])
            region = image[y1:y1 + info.size[1], x1:x1 + info.size[0]]
        crop = cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=cv2.INTER_AREA)
        coeffs = np.random.default_rng(1).normal(0, 0.1, 73).astype(np.float32)
        coeffs[70:] = (0.9, 120.0, 110.0)  # crop scale and position, as the extractor reports them
        return StubFace(crop, info, coeffs)

    def extract_video(self, frames: Iterable[np.ndarray], preprocess: str) -> np.ndarray:
        """(N, 73): the frames' mean brightness drives the yaw, so tests can see the reference was used."""
        rows = []
        for frame in frames:
            row = np.zeros(73, np.float32)
            row[64] = (float(frame.mean()) / 255.0 - 0.5) * 0.6
            rows.append(row)
        self.video_calls.append((len(rows), preprocess))
        return np.stack(rows) if rows else np.zeros((0, 73), np.float32)


class StandInMotionStage:
    """One coefficient row per 640 samples (the original's frame count: floor(samples / 640)); the expression
    follows the audio's loudness, the head sways gently; reference pose rows replace the pose when given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def generate(self, audio: np.ndarray, source_coeffs: np.ndarray, **kwargs: Any) -> np.ndarray:
        self.calls.append(dict(kwargs, samples=len(audio)))
        frames = max(1, len(audio) // FRAME_SAMPLES)
        loud = np.array([np.abs(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]).mean() if len(audio) else 0.0
                         for i in range(frames)], np.float32)
        out = np.repeat(np.asarray(source_coeffs, np.float32)[None, :70], frames, axis=0)
        out[:, :64] += loud[:, None] * np.linspace(-2, 2, 64, dtype=np.float32)[None]
        if not kwargs.get("still"):
            out[:, 64] += 0.1 * np.sin(np.arange(frames) / 5.0)
        ref_pose = kwargs.get("ref_pose")
        if ref_pose is not None:
            idx = np.arange(frames) % len(ref_pose)
            out[:, 64:70] = ref_pose[idx, 64:70]
        return out


class CountingEnhancer:
    """Marks every frame (a bright top-left square), counting what streams through."""

    def __init__(self) -> None:
        self.frames = 0

    def enhance_iter(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            self.frames += 1
            out = frame.copy()
            out[:8, :8] = 255
            yield out
