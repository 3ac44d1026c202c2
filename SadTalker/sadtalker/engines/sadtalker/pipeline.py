"""The SadTalker engine: portrait + speech -> talking-head mp4, composed of the method's stages.

  1. driving audio (the clip, a reference video's sound, or the idle length)
  2. source face: crop + 3DMM coefficients (source_face)
  3. reference coefficients from a reference video (source_face, per frame at 25 fps)
  4. motion: audio -> per-frame expression and head pose (motion: audio2exp + audio2pose)
  5. render: coefficients -> face frames (render), paste-back / resize (paste), optional enhancer (enhance), encoder

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

from sadtalker.accel import AccelConfig
from sadtalker.engines.base import GenerationInputs, GenerationResult, ProgressFn, no_progress
from sadtalker.engines.sadtalker.paste import CropInfo, PasteBack, rendered_frame_size
from sadtalker.engines.sadtalker.render import FaceRenderer, HeadAngles
from sadtalker.engines.timing import StageTimes
from sadtalker.errors import InvalidInputError
from sadtalker.io.audio import SAMPLE_RATE
from sadtalker.io.video import FPS, VideoWriter, iter_video_frames
from sadtalker.options import GenerationOptions
from sadtalker.runtime.device import Precision, configure_precision, resolve_device
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
                 enhancer: EnhancerStage | None = None, accel: AccelConfig | None = AccelConfig(),
                 precision: Precision = "fp32") -> None:
        self.face = face
        self.motion = motion
        self.renderers = dict(renderers)
        self.device = device
        self.locations = locations
        self._enhancer = enhancer
        self.accel = accel                        # for renderers loaded later (512)
        self.precision = precision
        self._lock = threading.RLock()

    @classmethod
    def from_checkpoint(cls, locations: CheckpointLocations, device: str | torch.device = "auto",
                        accel: AccelConfig | None = AccelConfig(), precision: Precision = "fp32",
                        ) -> "SadTalkerPipeline":
        """Load the face, motion and 256 renderer networks now (512 and the enhancer on first use).

        `accel`: the renderer's speed paths (`AccelConfig(cpu_kernels=False)` keeps it on torch's own convolutions:
        about 1 GB less memory, slower; see README, Measured). `precision`: fp32 (exact), tf32, fp16 or bf16."""
        from sadtalker.engines.sadtalker.motion import AudioToMotion
        from sadtalker.engines.sadtalker.source_face import SourceFaceExtractor

        dev = resolve_device(device)
        configure_precision(dev, precision)
        started = time.perf_counter()
        face = SourceFaceExtractor.from_checkpoint(locations, device=dev, precision=precision)
        motion = AudioToMotion.from_checkpoint(locations, device=dev, precision=precision)
        renderer = FaceRenderer.from_checkpoint(locations, size=256, device=dev, accel=accel,
                                                precision=_render_precision(precision))
        renderer.mapping("crop")
        renderer.mapping("full")
        logger.info("SadTalker pipeline loaded on %s in %.1f s", dev, time.perf_counter() - started)
        return cls(face, motion, {256: renderer}, dev, locations, accel=accel, precision=precision)

    # The Engine protocol.
    def generate(self, inputs: GenerationInputs, options: GenerationOptions, output_path: Path,
                 progress: ProgressFn | None = None) -> GenerationResult:
        return self(inputs, options, output_path, progress)

    def __call__(self, inputs: GenerationInputs, options: GenerationOptions, output_path: Path,
                 progress: ProgressFn | None = None) -> GenerationResult:
        progress = progress or no_progress
        times = StageTimes()
        with self._lock, torch.inference_mode():
            self._seed(options.seed)
            # 1. driving audio
            audio = self.driving_audio(inputs, options)
            # 2. source face
            progress(0.0, "finding the face")
            with times.stage("face"):
                face = self.face.extract(inputs.image, options.preprocess, options.size)
            # 3. reference video
            with times.stage("reference"):
                refs = self.reference_coefficients(inputs, options, progress)
            # 4. motion
            progress(0.08, "predicting motion")
            with times.stage("motion"):
                coeffs = self.predict_motion(audio, face, refs, options)
            # 5. render, compose, enhance, encode (one stream)
            width, height = self.render_video(inputs.image, face, coeffs, audio, options, Path(output_path),
                                              progress, times)
        progress(1.0, "done")
        timings = times.as_dict()
        logger.info("generated %s: %d frames %dx%d in %.1f s", output_path, len(coeffs), width, height,
                    sum(timings.values()))
        return GenerationResult(video_path=Path(output_path), engine=self.name, num_frames=len(coeffs),
                                audio_seconds=len(coeffs) / FPS, width=width, height=height, timings=timings)

    # 1. driving audio
    @staticmethod
    def driving_audio(inputs: GenerationInputs, options: GenerationOptions) -> DrivingAudio:
        """The speech or the reference video's sound (16 kHz mono, read with the inputs), or silence in idle mode."""
        if inputs.audio is not None:
            return DrivingAudio(inputs.audio, idle=False)
        if options.idle_mode:
            return DrivingAudio(np.zeros(int(round(options.idle_seconds * SAMPLE_RATE)), np.float32), idle=True)
        raise InvalidInputError("an audio clip is needed (or idle mode, or a reference video in 'all' mode)")

    def reference_coefficients(self, inputs: GenerationInputs, options: GenerationOptions,
                               progress: ProgressFn) -> References:
        """Coefficients (N, 73) of the reference video(s) for pose and/or blinks, per the options."""
        refs = References()
        if inputs.ref_video is None and inputs.ref_eyeblink_video is None:
            return refs
        progress(0.04, "reading the reference video")
        main = self._video_coefficients(inputs.ref_video, options) if inputs.ref_video is not None else None
        if options.ref_info in ("pose", "pose+blink", "all"):
            refs.pose = main
        if options.ref_info == "all":
            refs.everything = main
        if inputs.ref_eyeblink_video is not None:
            refs.blink = self._video_coefficients(inputs.ref_eyeblink_video, options)
        elif options.ref_info in ("blink", "pose+blink"):
            refs.blink = main
        return refs

    def _video_coefficients(self, path: Path, options: GenerationOptions) -> np.ndarray:
        if not path.is_file():
            raise InvalidInputError(f"reference video not found: {path.name}")
        frames = iter_video_frames(path, MAX_REFERENCE_FRAMES, fps=FPS)   # the audio's frame rate
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
                    self.locations, size=size, device=self.device, accel=self.accel,
                    precision=_render_precision(self.precision))
            return self.renderers[size]

    def enhancer(self) -> EnhancerStage:
        with self._lock:
            if self._enhancer is None:
                if self.locations is None:
                    raise InvalidInputError("no face enhancer is loaded")
                from sadtalker.engines.sadtalker.enhance import FaceEnhancer

                self._enhancer = FaceEnhancer.from_checkpoint(self.locations, device=self.device,
                                                              precision=self.precision)
            return self._enhancer

    def render_video(self, picture: np.ndarray, face: SourceFaceLike, coeffs: np.ndarray, audio: DrivingAudio,
                     options: GenerationOptions, output_path: Path, progress: ProgressFn,
                     times: StageTimes | None = None) -> tuple[int, int]:
        """Render, compose and encode all frames as one stream. Returns the video's (width, height).
        `times` gets each streamed stage's own seconds: render, compose, enhancer, encode."""
        times = times or StageTimes()
        renderer = self.renderer(options.size)
        crop_info = face.crop_info if isinstance(face.crop_info, CropInfo) else CropInfo.from_tuple(face.crop_info)
        total = len(coeffs)
        angles = HeadAngles.from_lists(total, options.input_yaw, options.input_pitch, options.input_roll)

        def on_frames(done: int, count: int) -> None:
            progress(0.1 + 0.88 * done / count, f"rendering frame {done}/{count}")

        frames: Iterator[np.ndarray] = times.stream(renderer.render(
            face.crop, coeffs, face.coeffs73, options.preprocess, options.batch_size, options.still_mode,
            float(options.expression_scale), angles, on_frames), "render")
        if options.preprocess.full:  # the face back into the whole picture
            paste = PasteBack(picture, crop_info, extended=options.preprocess.extended)
            frames = times.stream((paste(f) for f in frames), "compose", pulls_from="render")
            width, height = paste.size
        else:  # the face video, at the crop's (or the picture's, for resize) aspect ratio
            width, height = rendered_frame_size(options.size, crop_info)
            frames = times.stream((_resized(f, width, height) for f in frames), "compose", pulls_from="render")
        if options.enhancer:  # after paste-back, as the original does
            frames = times.stream(self.enhancer().enhance_iter(frames), "enhancer", pulls_from="compose")
        with VideoWriter(output_path, width, height, audio=_fit_audio(audio.samples, total),
                         sample_rate=SAMPLE_RATE) as writer:
            for frame in frames:
                with times.stage("encode"):
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


def _render_precision(precision: Precision) -> str:
    """The renderer's autocast setting: tf32 is fp32 arithmetic (switched process-wide)."""
    return "fp32" if precision == "tf32" else precision


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
