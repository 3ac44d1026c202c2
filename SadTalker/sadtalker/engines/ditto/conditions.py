"""Per-frame LMDM conditions (the original's ConditionHandler): HuBERT audio 1024 | emotion 8 | eye open 2 |
eye ball 6 | source keypoints 63 = 1103 values per frame."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sadtalker.errors import InvalidInputError

logger = logging.getLogger(__name__)

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")
DEFAULT_EMOTION = 4  # neutral, the original's StreamSDK default
AUDIO_DIM = 1024
COND_DIM = AUDIO_DIM + len(EMOTIONS) + 2 + 6 + 63  # 1103

Emotion = int | Sequence[int] | np.ndarray


def emotion_vector(labels: int | Sequence[int]) -> np.ndarray:
    """(8,) float32 softmax of a vector holding 8 at each given label and 0 elsewhere (a soft one-hot)."""
    labels = [labels] if isinstance(labels, (int, np.integer)) else list(labels)
    if not labels or not all(isinstance(i, (int, np.integer)) and 0 <= i < len(EMOTIONS) for i in labels):
        raise InvalidInputError(f"emotion must be a label 0..7 ({', '.join(EMOTIONS)}) or a list of them, got {labels!r}")
    logits = np.zeros(len(EMOTIONS), dtype=np.float32)
    logits[labels] = 8
    e = np.exp(logits - logits.max())
    return e / e.sum()


def emotion_rows(emotion: Emotion) -> np.ndarray:
    """(m, 8) float32: one row for a label or a mix of labels, m rows for an (m, 8) array given per frame."""
    if isinstance(emotion, np.ndarray) and emotion.ndim == 2 and emotion.shape[1] == len(EMOTIONS):
        return emotion.astype(np.float32, copy=False)
    if isinstance(emotion, np.ndarray):
        raise InvalidInputError(f"an emotion array must have shape (frames, 8), got {emotion.shape}")
    return emotion_vector(emotion)[None]


def mirror_index(index: int, size: int) -> int:
    """Index into a sequence played forward, then backward, then forward... (ping-pong)."""
    turn, rest = divmod(index, size)
    return rest if turn % 2 == 0 else size - rest - 1


@dataclass(frozen=True)
class SourceConditions:
    """What the source portrait contributes to every frame's condition.

    eye_open: (n, 2), eye_ball: (n, 6) per source frame (n = 1 for an image); keypoints: (63,) source `kp`.
    """

    eye_open: np.ndarray
    eye_ball: np.ndarray
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        for name, dim in (("eye_open", 2), ("eye_ball", 6)):
            a = getattr(self, name)
            if a.ndim != 2 or a.shape[1] != dim or len(a) == 0:
                raise InvalidInputError(f"{name} must have shape (frames, {dim}), got {a.shape}")
        if self.keypoints.size != 63:
            raise InvalidInputError(f"source keypoints must hold 63 values, got shape {self.keypoints.shape}")


class ConditionBuilder:
    """Builds condition rows for any frame range, so the motion loop needs only one clip's rows at a time."""

    def __init__(self, source: SourceConditions, emotion: Emotion = DEFAULT_EMOTION) -> None:
        self.source = source
        self.emotion = emotion_rows(emotion)  # (m, 8)

    def __call__(self, audio: np.ndarray, start: int = 0) -> np.ndarray:
        """audio (n, 1024) HuBERT rows of frames start..start+n-1 -> (n, 1103) float32."""
        if audio.ndim != 2 or audio.shape[1] != AUDIO_DIM:
            raise InvalidInputError(f"audio features must have shape (frames, {AUDIO_DIM}), got {audio.shape}")
        n = len(audio)
        frames = [max(i, 0) for i in range(start, start + n)]  # negative frames (padding) use frame 0
        emo = self.emotion[[i % len(self.emotion) for i in frames]]
        eye_open = self.source.eye_open[[mirror_index(i, len(self.source.eye_open)) for i in frames]]
        eye_ball = self.source.eye_ball[[mirror_index(i, len(self.source.eye_ball)) for i in frames]]
        keypoints = np.broadcast_to(self.source.keypoints.reshape(1, 63), (n, 63))
        rows = np.concatenate([audio, emo, eye_open, eye_ball, keypoints], axis=-1)  # (n, 1103)
        return rows.astype(np.float32, copy=False)
