"""The SadTalker engine: portrait + speech -> talking-head mp4, composed of the method's stages.

  1. inputs (picture, driving audio or idle length, optional reference video)
  2. source face: crop + 3DMM coefficients (face3d)
  3. reference coefficients from a reference video (face3d, per frame)
  4. motion: audio -> per-frame expression and head pose (audio2exp + audio2pose)
  5. render: coefficients -> face frames (face renderer), paste-back / resize, optional enhancer, encoder

Every network is loaded once by `from_checkpoint` and kept; frames stream from the renderer into ffmpeg.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import cv2
import numpy as np
import torch

from sadtalker.engines.base import Device, GenerationResult, ProgressFn, no_progress
from sadtalker.engines.sadtalker.paste import CropInfo, PasteBack, rendered_frame_size
from sadtalker.engines.sadtalker.render import FaceRenderer, HeadAngles, is_full_mode
from sadtalker.errors import FFmpegError, InvalidInputError
from sadtalker.io.audio import SAMPLE_RATE, check_audio, load_audio
from sadtalker.io.image import load_image
from sadtalker.io.video import FPS, VideoWriter, decode_audio, iter_video_frames
from sadtalker.options import GenerationOptions
from sadtalker.weights import CheckpointLocations

logger = logging.getLogger(__name__)

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MAX_REFERENCE_FRAMES = 25 * 300


class SourceFaceLike(Protocol):
    crop: np.ndarray          # (S, S, 3) uint8 RGB face crop
    crop_info: Any            # ((w, h), crop box, quad) or CropInfo
    coeffs73: np.ndarray      # (73,) or (1, 73): exp 64, angles 3, translation 3, crop parameters 3


class FaceStage(Protocol):
    """Crop + 3DMM coefficients (sadtalker.engines.sadtalker.source_face.SourceFaceExtractor)."""

    def extract(self, image: np.ndarray, preprocess: str, size: int) -> SourceFaceLike: ...

    def extract_video(self, frames: Iterable[np.ndarray], preprocess: str) -> np.ndarray: ...


class MotionStage(Protocol):
    """Audio -> (T, 70) coefficients (sadtalker.engines.sadtalker.motion.AudioToMotion)."""

    def generate(self, audio: np.ndarray, source_coeffs: np.ndarray, **kwargs: Any) -> np.ndarray: ...


class EnhancerStage(Protocol):
    def enhance_iter(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]: ...


def resolve_device(device: Device | str) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InvalidInputError(f"device must be auto, cpu or cuda; got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError("device cuda was asked for but no CUDA device is available")
    return torch.device(device)


@dataclass
class References:
    """Reference-video coefficients (N, 73) by use; None where not asked for."""

    pose: np.ndarray | None = None
    blink: np.ndarray | None = None
    everything: np.ndarray | None = None   # 'all': the video's own motion replaces the predicted one


@dataclass
class DrivingAudio:
    samples: np.ndarray      # float32 mono 16 kHz
    idle: bool               # no speech: idle motion


class SadTalkerPipeline:
    """Engine protocol implementation, name "sadtalker". Thread-safe: one generation at a time per instance."""

    name = "sadtalker"

    def __init__(self, face: FaceStage, motion: MotionStage, renderers: dict[int, FaceRenderer],
                 device: torch.device, locations: CheckpointLocations | None = None,
                 enhancer: EnhancerStage | None = None, cpu_fast_paths: bool = True) -> None:
        self.face = face
        self.motion = motion
        self.renderers = dict(renderers)
        self.device = device
        self.locations = locations
        self._enhancer = enhancer
        self.cpu_fast_paths = cpu_fast_paths      # for renderers loaded later (512)
        self._lock = threading.RLock()

    @classmethod
    def from_checkpoint(cls, locations: CheckpointLocations, device: Device | str = "auto",
                        cpu_fast_paths: bool = True) -> "SadTalkerPipeline":
        """Load the face, motion and 256 renderer networks now (512 and the enhancer on first use).

        `cpu_fast_paths=False` keeps the renderer on torch's own convolutions on the CPU: about 1 GB less memory
        (no transformed weights kept), slower (see README, Measured)."""
        from sadtalker.engines.sadtalker.motion import AudioToMotion
        from sadtalker.engines.sadtalker.source_face import SourceFaceExtractor

        dev = resolve_device(device)
        started = time.perf_counter()
        face = SourceFaceExtractor.from_checkpoint(locations, device=dev)
        motion = AudioToMotion.from_checkpoint(locations, device=dev)
        renderer = FaceRenderer.from_checkpoint(locations, size=256, device=dev,
                                                winograd=None if cpu_fast_paths else False)
        renderer.mapping("crop")
        renderer.mapping("full")
        logger.info("SadTalker pipeline loaded on %s in %.1f s", dev, time.perf_counter() - started)
        return cls(face, motion, {256: renderer}, dev, locations, cpu_fast_paths=cpu_fast_paths)

    # The Engine protocol.
    def generate(self, image_path: Path, audio_path: Path | None, options: GenerationOptions, output_path: Path,
                 progress: ProgressFn | None = None) -> GenerationResult:
        return self(image_path, audio_path, options, output_path, progress)

    def __call__(self, image_path: Path, audio_path: Path | None, options: GenerationOptions, output_path: Path,
                 progress: ProgressFn | None = None) -> GenerationResult:
        progress = progress or no_progress
        timings: dict[str, float] = {}
        with self._lock, torch.inference_mode():
            self._seed(options.seed)
            # 1. inputs
            t = time.perf_counter()
            progress(0.0, "reading inputs")
            picture = load_image(Path(image_path))
            audio = self.driving_audio(audio_path, options)
            timings["inputs"] = time.perf_counter() - t
            # 2. source face
            t = time.perf_counter()
            progress(0.02, "finding the face")
            face = self.face.extract(picture, options.preprocess, options.size)
            timings["face"] = time.perf_counter() - t
            # 3. reference video
            t = time.perf_counter()
            refs = self.reference_coefficients(options, progress)
            timings["reference"] = time.perf_counter() - t
            # 4. motion
            t = time.perf_counter()
            progress(0.08, "predicting motion")
            coeffs = self.predict_motion(audio, face, refs, options)
            timings["motion"] = time.perf_counter() - t
            # 5. render, compose, encode
            t = time.perf_counter()
            width, height = self.render_video(picture, face, coeffs, audio, options, Path(output_path), progress)
            timings["render"] = time.perf_counter() - t
        progress(1.0, "done")
        logger.info("generated %s: %d frames %dx%d in %.1f s", output_path, len(coeffs), width, height,
                    sum(timings.values()))
        return GenerationResult(video_path=Path(output_path), engine=self.name, num_frames=len(coeffs),
                                audio_seconds=len(coeffs) / FPS, width=width, height=height, timings=timings)

    # 1. inputs
    def driving_audio(self, audio_path: Path | None, options: GenerationOptions) -> DrivingAudio:
        """The speech (16 kHz mono), the reference video's own sound ('all'), or silence for idle mode."""
        if options.ref_video and options.ref_info == "all":  # the reference video drives everything, sound too
            try:
                samples = decode_audio(Path(options.ref_video), SAMPLE_RATE)
            except FFmpegError:  # no sound track (an unreadable video fails with its own message below)
                samples = np.zeros(0, np.float32)
            if samples.size == 0:
                logger.info("the reference video has no sound; the clip will be silent")
            return DrivingAudio(samples, idle=False)
        if options.idle_mode:
            return DrivingAudio(np.zeros(int(round(options.idle_seconds * SAMPLE_RATE)), np.float32), idle=True)
        if audio_path is None:
            raise InvalidInputError("an audio file is needed (or idle mode, or a reference video in 'all' mode)")
        samples = load_audio(Path(audio_path))
        check_audio(samples)
        return DrivingAudio(samples, idle=False)

    def reference_coefficients(self, options: GenerationOptions, progress: ProgressFn) -> References:
        """Coefficients (N, 73) of the reference video(s) for pose and/or blinks, per the options."""
        refs = References()
        if not options.ref_video and not options.ref_eyeblink_video:
            return refs
        progress(0.04, "reading the reference video")
        main = self._video_coefficients(Path(options.ref_video), options) if options.ref_video else None
        if options.ref_info in ("pose", "pose+blink", "all"):
            refs.pose = main
        if options.ref_info == "all":
            refs.everything = main
        if options.ref_eyeblink_video:
            refs.blink = self._video_coefficients(Path(options.ref_eyeblink_video), options)
        elif options.ref_info in ("blink", "pose+blink"):
            refs.blink = main
        return refs

    def _video_coefficients(self, path: Path, options: GenerationOptions) -> np.ndarray:
        if not path.is_file():
            raise InvalidInputError(f"reference video not found: {path.name}")
        frames = iter_video_frames(path, MAX_REFERENCE_FRAMES)
        coeffs = np.asarray(self.face.extract_video(frames, options.preprocess), dtype=np.float32)
        if coeffs.ndim != 2 or len(coeffs) == 0:
            raise InvalidInputError(f"no face was found in the reference video {path.name}")
        return coeffs

    # 4. motion
    def predict_motion(self, audio: DrivingAudio, face: SourceFaceLike, refs: References,
                       options: GenerationOptions) -> np.ndarray:
        """(T, 70) per-frame coefficients: expression 64 + pose 6."""
        if refs.everything is not None:
            return np.ascontiguousarray(refs.everything[:, :70])
        coeffs = self.motion.generate(
            audio.samples, np.asarray(face.coeffs73, np.float32).reshape(-1),
            pose_style=options.pose_style, still=options.still_mode, idle=audio.idle,
            use_blink=options.use_blink, ref_eyeblink=refs.blink, ref_pose=refs.pose, seed=options.seed)
        coeffs = np.asarray(coeffs, dtype=np.float32)
        if coeffs.ndim != 2 or coeffs.shape[1] < 70 or len(coeffs) == 0:
            raise InvalidInputError(f"the motion stage returned coefficients of shape {coeffs.shape}")
        return coeffs

    # 5. render
    def renderer(self, size: int) -> FaceRenderer:
        with self._lock:
            if size not in self.renderers:
                if self.locations is None:
                    raise InvalidInputError(f"no {size} renderer is loaded")
                self.renderers[size] = FaceRenderer.from_checkpoint(
                    self.locations, size=size, device=self.device, winograd=None if self.cpu_fast_paths else False)
            return self.renderers[size]

    def enhancer(self) -> EnhancerStage:
        with self._lock:
            if self._enhancer is None:
                if self.locations is None:
                    raise InvalidInputError("no face enhancer is loaded")
                from sadtalker.engines.sadtalker.enhance import FaceEnhancer

                self._enhancer = FaceEnhancer.from_checkpoint(self.locations, device=self.device)
            return self._enhancer

    def render_video(self, picture: np.ndarray, face: SourceFaceLike, coeffs: np.ndarray, audio: DrivingAudio,
                     options: GenerationOptions, output_path: Path, progress: ProgressFn) -> tuple[int, int]:
        """Render, compose and encode all frames as one stream. Returns the video's (width, height)."""
        renderer = self.renderer(options.size)
        crop_info = face.crop_info if isinstance(face.crop_info, CropInfo) else CropInfo.from_tuple(face.crop_info)
        total = len(coeffs)
        angles = HeadAngles.from_lists(total, options.input_yaw, options.input_pitch, options.input_roll)

        def on_frames(done: int, count: int) -> None:
            progress(0.1 + 0.88 * done / count, f"rendering frame {done}/{count}")

        frames: Iterator[np.ndarray] = renderer.render(
            face.crop, coeffs, face.coeffs73, options.preprocess, options.batch_size, options.still_mode,
            float(options.expression_scale), angles, on_frames)
        if is_full_mode(options.preprocess):  # the face back into the whole picture
            paste = PasteBack(picture, crop_info, extended=options.preprocess == "extfull")
            frames = (paste(f) for f in frames)
            width, height = paste.size
        else:  # the face video, at the crop's (or the picture's, for resize) aspect ratio
            width, height = rendered_frame_size(options.size, crop_info)
            frames = (_resized(f, width, height) for f in frames)
        if options.enhancer:  # after paste-back, as the original does
            frames = self.enhancer().enhance_iter(frames)
        with VideoWriter(output_path, width, height, audio=_fit_audio(audio.samples, total),
                         sample_rate=SAMPLE_RATE) as writer:
            for frame in frames:
                writer.write(frame)
            if writer.frames_written != total:
                raise RuntimeError(f"the renderer produced {writer.frames_written} frames for {total} rows")
            progress(0.99, "encoding")
        return width, height

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)


def _fit_audio(samples: np.ndarray, num_frames: int) -> np.ndarray:
    """The clip's sound cut (or padded with silence) to exactly the video's length."""
    wanted = num_frames * SAMPLES_PER_FRAME
    if len(samples) >= wanted:
        return samples[:wanted]
    return np.concatenate([samples, np.zeros(wanted - len(samples), np.float32)])


def _resized(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
