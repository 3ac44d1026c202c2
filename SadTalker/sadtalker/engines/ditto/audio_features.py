"""HuBERT audio features at 25 fps for Ditto (the original's Wav2FeatHubert.wav2feat, offline mode).

The official streaming HuBERT (`hubert_streaming_fix_kv.onnx`) takes one 6480-sample window (0.4 s + 80 samples)
and returns 50 Hz features; each window advances 5 video frames (0.2 s), and its rows -14:-4 averaged in pairs
give those 5 frames' 1024-dim features. The speech is padded so window 0 ends 2 frames after frame 4.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from sadtalker.errors import AudioError, CheckpointError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FPS = 25
FEATURE_DIM = 1024
HUBERT_FILE = "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx"
HUBERT_INPUT = "input_values"  # [1, 6480] float32; output [frames, 1024] (the TensorRT engine calls it encoding_out)
CHUNKSIZE = (3, 5, 2)  # frames of left context, frames produced, frames of right context (40 ms each)

Encoder = Callable[[np.ndarray], np.ndarray]


def window_samples(chunksize: tuple[int, int, int] = CHUNKSIZE) -> int:
    """6480: the whole window plus 80 samples (the convolutional front end's receptive field)."""
    return int(sum(chunksize) * 0.04 * SAMPLE_RATE) + 80


def num_video_frames(num_samples: int) -> int:
    """Video frames for a 16 kHz clip: ceil(seconds * 25), with the original's float expression."""
    return math.ceil(num_samples / SAMPLE_RATE * FPS)


def padded_speech(audio: np.ndarray, chunksize: tuple[int, int, int] = CHUNKSIZE) -> np.ndarray:
    """The speech with 2000 zeros in front (window minus the produced + right-context part) and a full window of
    zeros behind, so every window is complete."""
    size = window_samples(chunksize)
    front = size - int(sum(chunksize[1:]) * 0.04 * SAMPLE_RATE)
    return np.concatenate([np.zeros(front, audio.dtype), audio, np.zeros(size, audio.dtype)])


def windows(audio: np.ndarray, chunksize: tuple[int, int, int] = CHUNKSIZE) -> Iterator[np.ndarray]:
    """The (6480,) windows fed to HuBERT, one per `chunksize[1]` video frames.

    Starts are the original's truncated float product, so some windows from frame 1615 (64.6 s) on start one
    sample before frame * 640; kept for parity.
    """
    speech, size = padded_speech(audio, chunksize), window_samples(chunksize)
    for frame in range(0, num_video_frames(len(audio)), chunksize[1]):
        start = int(frame * 0.04 * SAMPLE_RATE)  # the original's float expression, truncated
        yield speech[start : start + size]


def reduce_window(encoding: np.ndarray, chunksize: tuple[int, int, int] = CHUNKSIZE) -> np.ndarray:
    """(T, 1024) 50 Hz features of one window -> (chunksize[1], 1024) at 25 Hz: rows -14:-4, pairs averaged."""
    first, last = -sum(chunksize[1:]) * 2, -chunksize[2] * 2
    rows = encoding[first:last]  # (10, 1024)
    if rows.shape != (chunksize[1] * 2, FEATURE_DIM):
        raise AudioError(f"HuBERT returned features of shape {encoding.shape}; expected (frames >= "
                         f"{-first}, {FEATURE_DIM})")
    return rows.reshape(chunksize[1], 2, FEATURE_DIM).mean(axis=1)


def hubert_features(audio: np.ndarray, encoder: Encoder, chunksize: tuple[int, int, int] = CHUNKSIZE) -> np.ndarray:
    """16 kHz mono float32 (N,) -> (ceil(N / 640), 1024) float32 features, one row per video frame."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise AudioError(f"audio must be non-empty mono samples, got shape {audio.shape}")
    num_frames = num_video_frames(len(audio))
    out = np.empty((num_frames, FEATURE_DIM), np.float32)
    for i, window in enumerate(windows(audio, chunksize)):
        rows = reduce_window(encoder(window), chunksize)
        start = i * chunksize[1]
        out[start : start + chunksize[1]] = rows[: num_frames - start]
    return out


class HubertOnnx:
    """The official streaming HuBERT through onnxruntime; call with one (6480,) window -> (T, 1024)."""

    def __init__(self, path: Path, device: Literal["cpu", "cuda"] = "cpu", threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            from sadtalker.engines.ditto.weights import DITTO_DOWNLOAD_HINT

            raise CheckpointError(f"HuBERT model not found: {path}. Get the official Ditto files with: "
                                  f"{DITTO_DOWNLOAD_HINT}")
        try:
            import onnxruntime
        except ImportError as exc:  # a runtime dependency (requirements.txt)
            raise CheckpointError("onnxruntime is not installed; it runs Ditto's HuBERT model "
                                  "(pip install -r requirements.txt)") from exc
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise CheckpointError(f"HuBERT model {path} cannot be loaded ({type(exc).__name__}: {exc}); download it "
                                  "again") from exc
        names = [i.name for i in self.session.get_inputs()]
        if HUBERT_INPUT not in names:
            raise CheckpointError(f"HuBERT model {path} has inputs {names}; expected {HUBERT_INPUT!r} (the official "
                                  "hubert_streaming_fix_kv.onnx)")
        logger.info("loaded HuBERT %s (%s)", path.name, ", ".join(self.session.get_providers()))

    def __call__(self, window: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {HUBERT_INPUT: window.reshape(1, -1).astype(np.float32, copy=False)})[0]
        if out.ndim == 3 and out.shape[0] == 1:  # tolerate a batch axis; the official model returns (T, 1024)
            out = out[0]
        return out
