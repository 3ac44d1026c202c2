"""DittoEngine: portrait + speech -> talking-head mp4 with Ditto (antgroup/ditto-talkinghead), what the original's
offline StreamSDK does for an image source:

  1. audio features: the official streaming HuBERT (ONNX) at 25 fps
  2. source: crop, eye state, motion and appearance features of the portrait, once
  3. motion: LMDM diffusion clip by clip, fused and smoothed
  4. frames: stitching -> warp + decode -> paste-back (full) or the crop itself (crop), streamed to the encoder

Everything is loaded once by `from_checkpoint`; frames leave the renderer a batch at a time, so memory does not grow
with the clip's length.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from sadtalker.accel import AccelConfig
from sadtalker.engines.base import GenerationInputs, GenerationResult, ProgressFn, no_progress
from sadtalker.engines.ditto.audio_features import Encoder, HubertOnnx, hubert_features
from sadtalker.engines.ditto.conditions import COND_DIM, DEFAULT_EMOTION, Emotion, SourceConditions, emotion_rows
from sadtalker.engines.ditto.motion import MOTION_DIM, MOTION_LAYOUT, AudioToMotion, DrivingMotion, MotionOptions
from sadtalker.engines.ditto.renderer import DittoRenderer
from sadtalker.engines.ditto.sampler import DDIMSchedule
from sadtalker.engines.ditto.source import CropOptions, Landmarker
from sadtalker.engines.ditto.stitch import DRIVEN_KEYS, StitchOptions
from sadtalker.engines.ditto.weights import DittoCheckpoints, load_lmdm, load_renderer_networks, read_cfg
from sadtalker.engines.timing import StageTimes
from sadtalker.errors import CheckpointError, InvalidInputError
from sadtalker.io.audio import SAMPLE_RATE
from sadtalker.io.video import FPS, VideoWriter
from sadtalker.options import GenerationOptions, Preprocess
from sadtalker.runtime.device import Precision, configure_precision, resolve_device

logger = logging.getLogger(__name__)

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
PREPROCESS_MODES = (Preprocess.CROP, Preprocess.FULL)
SEQ_FRAMES = 80

# StreamSDK.setup's defaults for the keys of the release config's `default_kwargs` that this engine does not
# implement (fades, control deltas, scripted blinks, online mode...): a release that sets one of them to anything
# else is reported in the log, by name, when the engine loads.
UNIMPLEMENTED_DEFAULTS: dict[str, Any] = {
    "online_mode": False, "fix_kp_cond": 0, "fix_kp_cond_dim": None, "v_min_max_for_clip": None, "N_d": -1,
    "delta_eye_arr": None, "delta_eye_open_n": 0, "fade_type": "", "fade_out_keys": ("exp",), "ctrl_info": {},
    "overall_ctrl_info": {}, "ch_info": None, "vad_alpha": 1,
}
# Keys that only act on video sources (or that the original reads and never passes on): no effect on a portrait.
NO_EFFECT_ON_IMAGES = ("template_n_frames", "smo_k_s", "eye_f0_mode", "crop_vx_ratio")


@dataclass(frozen=True)
class DittoConfig:
    """The run settings: StreamSDK.setup's defaults, overridden by the release config's `default_kwargs`."""

    steps: int = 50                     # sampling_timesteps
    emotion: Emotion = DEFAULT_EMOTION  # emo
    overlap: int = 10                   # overlap_v2
    smooth_window: int = 3              # smo_k_d
    max_size: int = 1920                # the source picture's longer side at most
    crop: CropOptions = field(default_factory=CropOptions)
    stitch: StitchOptions = field(default_factory=StitchOptions)

    def __post_init__(self) -> None:
        DDIMSchedule.create(self.steps)  # refuses step counts the original turns into a NaN motion
        emotion_rows(self.emotion)
        if not 0 < self.overlap < SEQ_FRAMES:
            raise InvalidInputError(f"the clip overlap must be in 1..{SEQ_FRAMES - 1}; got {self.overlap}")
        if self.smooth_window < 1 or self.max_size < 0:
            raise InvalidInputError(f"smoothing window {self.smooth_window} / max_size {self.max_size} out of range")

    @property
    def motion_options(self) -> MotionOptions:
        return MotionOptions(steps=self.steps, emotion=self.emotion, overlap=self.overlap,
                             smooth_window=self.smooth_window)

    @classmethod
    def from_release(cls, cfg: Mapping[str, Any], path: Path | str = "the config") -> DittoConfig:
        """Check that the config (`read_cfg`) describes the model this engine implements (v0.4, HuBERT, 265-dim
        motion, 1103-dim conditions, 80-frame clips) and read its `default_kwargs`."""
        a2m = cfg.get("audio2motion_cfg") or {}
        expected = {"w2f_type": "hubert", "motion_feat_dim": MOTION_DIM, "audio_feat_dim": COND_DIM,
                    "seq_frames": SEQ_FRAMES, "use_emo": True, "use_sc": True, "use_eye_open": True,
                    "use_eye_ball": True}
        wrong = [f"{k}={a2m[k]!r} (expected {v!r})" for k, v in expected.items() if k in a2m and a2m[k] != v]
        if wrong:
            raise CheckpointError(f"{path} describes a Ditto model this engine does not implement: {', '.join(wrong)}")
        kw = dict(cfg.get("default_kwargs") or {})
        changed = sorted(k for k, v in kw.items()
                         if k in UNIMPLEMENTED_DEFAULTS and not _same(v, UNIMPLEMENTED_DEFAULTS[k]))
        unknown = sorted(k for k in kw if k not in UNIMPLEMENTED_DEFAULTS and k not in NO_EFFECT_ON_IMAGES
                         and k not in _IMPLEMENTED)
        if changed or unknown:
            logger.warning("the Ditto config %s sets options this engine does not implement, which it runs without: "
                           "%s", path, ", ".join(changed + unknown))
        crop, stitch = CropOptions(), StitchOptions()
        emo = kw.get("emo", DEFAULT_EMOTION)
        return cls(
            steps=int(kw.get("sampling_timesteps", 50)),
            emotion=np.asarray(emo, np.float32) if isinstance(emo, np.ndarray) else emo,
            overlap=int(kw.get("overlap_v2", 10)),
            smooth_window=int(kw.get("smo_k_d", 3)),
            max_size=int(kw.get("max_size", 1920)),
            crop=replace(crop, scale=float(kw.get("crop_scale", crop.scale)),
                         vy_ratio=float(kw.get("crop_vy_ratio", crop.vy_ratio)),
                         rotate=bool(kw.get("crop_flag_do_rot", crop.rotate))),
            stitch=replace(stitch, relative=bool(kw.get("relative_d", True)),
                           drive_eye=True if kw.get("drive_eye") is None else bool(kw["drive_eye"]),
                           stitching=bool(kw.get("flag_stitching", True)),
                           driven_keys=DRIVEN_KEYS if kw.get("use_d_keys") is None else tuple(kw["use_d_keys"])),
        )


_IMPLEMENTED = ("sampling_timesteps", "emo", "overlap_v2", "smo_k_d", "max_size", "crop_scale", "crop_vy_ratio",
                "crop_flag_do_rot", "relative_d", "drive_eye", "flag_stitching", "use_d_keys")


def _same(value: Any, default: Any) -> bool:
    """A config value equal to StreamSDK's default (lists and tuples alike; arrays never are)."""
    if isinstance(value, np.ndarray):
        return False
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return value == default


def refuse_unsupported(inputs: GenerationInputs, options: GenerationOptions) -> None:
    """Options the Ditto engine does not implement are refused by name, never silently ignored."""
    unsupported = [name for name, on in (
        (f"preprocess {options.preprocess.value!r} (crop and full are available)",
         options.preprocess not in PREPROCESS_MODES),
        ("the enhancer", options.enhancer),
        ("reference videos", inputs.ref_video or inputs.ref_eyeblink_video),
        ("fixed head angles (input_yaw/pitch/roll)", options.input_yaw or options.input_pitch or options.input_roll),
        ("idle mode", options.idle_mode),
        ("pose styles (pose_style must be 0)", options.pose_style != 0),
        ("expression_scale other than 1", float(options.expression_scale) != 1.0)) if on]
    if unsupported:
        raise InvalidInputError(f"the Ditto engine does not support {', '.join(unsupported)}; change "
                                f"{'it' if len(unsupported) == 1 else 'them'} or use another engine")
    if inputs.audio is None or len(inputs.audio) == 0:
        raise InvalidInputError("the Ditto engine needs a speech clip")


def default_landmarker(checkpoints: DittoCheckpoints) -> Landmarker | None:
    """The original's 106/203-point landmark models (and its face detector, when that file is there too) when the
    user has put them in place (their licence is the user's matter), else None: our own face mesh (SourceEncoder's
    default)."""
    lmk106, lmk203 = checkpoints.aux_file("landmark106"), checkpoints.aux_file("landmark203")
    det = checkpoints.aux_file("det_10g")
    if lmk106.is_file() and lmk203.is_file():
        from sadtalker.engines.ditto.official_landmarks import OfficialLandmarker

        detector = det if det.is_file() else None
        logger.info("Ditto face crop from the official models %s, %s; face box from %s", lmk106.name, lmk203.name,
                    det.name if detector else "our BlazeFace detector (det_10g.onnx not found)")
        return OfficialLandmarker(lmk106, lmk203, detector)
    if det.is_file():
        logger.warning("%s is in place but %s and %s are not: the official face crop needs all three; using our "
                       "face mesh", det, lmk106.name, lmk203.name)
    return None


class DittoEngine:
    """Engine protocol implementation, name "ditto". One generation at a time per instance."""

    name = "ditto"

    def __init__(self, renderer: DittoRenderer, motion: AudioToMotion, hubert: Encoder,
                 config: DittoConfig | None = None, device: torch.device | str = "cpu") -> None:
        self.renderer = renderer
        self.motion = motion
        self.hubert = hubert
        self.config = config or DittoConfig()
        self.device = torch.device(device)
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, checkpoints: DittoCheckpoints, device: str | torch.device = "auto",
                        precision: Precision = "fp32", landmarker: Landmarker | None = None,
                        steps: int | None = None, accel: AccelConfig | None = AccelConfig()) -> DittoEngine:
        """Load every network once from the official release folder.

        `precision`: fp32 (exact; the only choice on the CPU), tf32, or fp16 / bf16 autocast on CUDA. `steps`
        overrides the config's DDIM step count. `accel`: the renderer's CPU speed paths (None: plain networks).

        Raises:
            CheckpointError: a file is missing (all missing ones are named, with the download command) or does not
                match the networks.
            InvalidInputError: fp16/bf16 off CUDA, or a step count the original computes as NaN.
        """
        dev = resolve_device(device)
        if precision in ("fp16", "bf16") and dev.type != "cuda":
            raise InvalidInputError(f"precision {precision} is for CUDA devices; the Ditto engine runs float32 on "
                                    f"{dev.type} (set SADTALKER_PRECISION=fp32)")
        configure_precision(dev, precision)
        checkpoints.require_all()
        config = DittoConfig.from_release(read_cfg(checkpoints.cfg_file, hint=checkpoints.download_hint),
                                          checkpoints.cfg_file)
        if steps is not None:
            config = replace(config, steps=steps)
        networks = {k: v.to(dev) for k, v in load_renderer_networks(checkpoints).items()}
        half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        renderer = DittoRenderer(networks, precision=precision if half is not None else "fp32",
                                 landmarker=landmarker or default_landmarker(checkpoints), crop_options=config.crop,
                                 stitch_options=config.stitch, accel=accel)
        motion = AudioToMotion(load_lmdm(checkpoints.network_file("lmdm"), device=dev, dtype=half or torch.float32,
                                         hint=checkpoints.download_hint))
        hubert = HubertOnnx(checkpoints.hubert_file, device="cuda" if dev.type == "cuda" else "cpu")
        logger.info("Ditto engine loaded from %s on %s (%s, %d DDIM steps)", checkpoints.root, dev, precision,
                    config.steps)
        return cls(renderer, motion, hubert, config, dev)

    # The Engine protocol.
    def generate(self, inputs: GenerationInputs, options: GenerationOptions, output_path: Path,
                 progress: ProgressFn | None = None) -> GenerationResult:
        """Animate the portrait to the speech and write an H.264 + AAC mp4 at 25 fps.

        Raises:
            InvalidInputError: an option this engine does not implement (named), or no speech.
            NoFaceError: the portrait has no face.
            FFmpegError: encoding failed.
        """
        progress = progress or no_progress
        refuse_unsupported(inputs, options)
        times = StageTimes()
        samples = np.asarray(inputs.audio, np.float32)
        with self._lock, torch.inference_mode():
            # 1. audio features (25 fps)
            progress(0.0, "reading the speech")
            with times.stage("audio"):
                features = hubert_features(samples, self.hubert)              # (N, 1024)
            num_frames = len(features)
            # 2. source portrait
            progress(0.03, "finding the face")
            with times.stage("source"):
                source = self.renderer.register(inputs.image, self.config.max_size)
            # 3. motion
            with times.stage("motion"):
                driving = self.predict_motion(features, source, options.seed, progress)
            # 4. frames, streamed to the encoder
            output_path = Path(output_path)
            width, height = self.write_video(source, driving, samples, options, output_path, progress, times)
        progress(1.0, "done")
        timings = times.as_dict()
        logger.info("ditto: %d frames %dx%d (%.2f s audio) in %.1f s", num_frames, width, height,
                    len(samples) / SAMPLE_RATE, sum(timings.values()))
        return GenerationResult(video_path=output_path, engine=self.name, num_frames=num_frames,
                                audio_seconds=len(samples) / SAMPLE_RATE, width=width, height=height, timings=timings)

    # 3. motion
    def predict_motion(self, features: np.ndarray, source, seed: int, progress: ProgressFn) -> DrivingMotion:
        """(N, 265) driving motion from the audio features; `seed` makes the diffusion noise (the same seed, the
        same motion)."""
        conditions = SourceConditions(source.eye_open, source.eye_ball, source.sc)
        return self.motion.generate(features, source.motion, conditions, self.config.motion_options,
                                    generator=torch.Generator().manual_seed(seed),
                                    progress=lambda fraction, stage: progress(0.05 + 0.25 * fraction,
                                                                              "predicting motion"))

    # 4. frames
    def stitch_options(self, options: GenerationOptions) -> StitchOptions:
        """still: the head keeps the portrait's pose (only the expression is driven, the original's
        use_d_keys=('exp',)); use_blink off: the eyes keep the portrait's state (drive_eye=False)."""
        stitch = self.config.stitch
        if options.still_mode:
            stitch = replace(stitch, driven_keys=tuple(k for k in stitch.driven_keys if k == "exp"))
        if not options.use_blink:
            stitch = replace(stitch, drive_eye=False)
        return stitch

    def write_video(self, source, driving: DrivingMotion, samples: np.ndarray, options: GenerationOptions,
                    output_path: Path, progress: ProgressFn, times: StageTimes) -> tuple[int, int]:
        """Render and encode every frame as one stream; returns (width, height). crop: the 512 face crop at
        `size`; full: pasted back into the (even-sized) portrait."""
        n = len(driving)
        full = options.preprocess.full
        motion = {key: getattr(driving, key) for key, _ in MOTION_LAYOUT}
        frames: Iterator[np.ndarray] = times.stream(self.renderer.frames(
            source, motion, lambda fraction, stage: progress(0.3 + 0.68 * fraction, f"rendering ({stage})"),
            paste_back=full, batch_size=options.batch_size, stitch_options=self.stitch_options(options)), "render")
        if full:
            height, width = source.frame.shape[:2]
        else:
            width = height = options.size
            if options.size != 512:
                frames = (cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames)
        audio = np.zeros(n * SAMPLES_PER_FRAME, np.float32)
        audio[: min(len(samples), len(audio))] = samples[: len(audio)]
        with VideoWriter(output_path, width, height, audio=audio, sample_rate=SAMPLE_RATE) as writer:
            for frame in frames:
                with times.stage("encode"):
                    writer.write(frame)
            if writer.frames_written != n:
                raise RuntimeError(f"the renderer produced {writer.frames_written} frames for {n} motion rows")
            progress(0.99, "encoding")
        return width, height
