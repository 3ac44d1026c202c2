"""Live animation with the landmark engine: the portrait speaks the sound as it arrives, frame by frame.

`LiveAnimator` holds one portrait's warp fields and the state carried between frames (the streaming mouth
analysis, the speaking envelope that scales the head motion); `frame(audio_window, index)` renders the frame for the
latest 40 ms of sound. Blinks and the idle head motion come from seeded tracks long enough for hours, so they go on
while nobody speaks. Transport (the WebSocket, the clock) is `sadtalker/service/live.py`'s business.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from sadtalker.engines.landmark.engine import MAX_JAW, apply_framing, choose_framing
from sadtalker.engines.landmark.motion import NOD, ROLL as ROLL_AMP, SCALE as SCALE_AMP, SHIFT_X as SHIFT_X_AMP
from sadtalker.engines.landmark.motion import SHIFT_Y as SHIFT_Y_AMP, blink_track, smooth_noise
from sadtalker.engines.landmark.mouth import MouthAnalyzer
from sadtalker.engines.landmark.warp import BLINK, JAW, NUM_CONTROLS, ROLL, SCALE, SHIFT_X, SHIFT_Y, WIDTH, FaceWarper
from sadtalker.io.audio import SAMPLE_RATE
from sadtalker.io.video import FPS
from sadtalker.landmarks import facemesh as fm
from sadtalker.options import GenerationOptions

logger = logging.getLogger(__name__)

TRACK_SECONDS = 3600          # blink and idle-motion tracks this long, then repeated
ENVELOPE_RATE = 1.0 / FPS     # the speaking envelope follows the mouth over about a second
JPEG_QUALITY = 80


@dataclass(frozen=True)
class LiveFrame:
    """One rendered frame: the JPEG, and the controls it shows (jaw opening 0..MAX_JAW, eyelid closure 0..1)."""

    jpeg: bytes
    opening: float
    blink: float


class LiveAnimator:
    """One portrait, animated live. Not thread-safe: one caller renders its frames in order."""

    def __init__(self, image: np.ndarray, mesh_model: fm.FaceMesh, options: GenerationOptions) -> None:
        mesh = mesh_model.landmarks(image)  # NoFaceError when there is none
        self.framing = choose_framing(image.shape, mesh, options.preprocess, options.size)
        framed, framed_mesh = apply_framing(image, mesh, self.framing)
        self.warper = FaceWarper(framed, framed_mesh, step=2 if max(framed.shape[:2]) <= 640 else 4)
        self.portrait = framed
        self.width, self.height = self.framing.width, self.framing.height
        self.options = options
        self.mouth = MouthAnalyzer(SAMPLE_RATE, FPS)
        rng = np.random.default_rng([options.seed, options.pose_style])
        frames = TRACK_SECONDS * FPS
        self.blinks = blink_track(frames, FPS, rng) if options.use_blink else np.zeros(frames, np.float32)
        self.noise = np.zeros((frames, 4), np.float32) if options.still_mode else np.stack(
            [smooth_noise(frames, FPS, rng) for _ in range(4)], axis=1)
        self.envelope = 0.0
        self.nod = 0.0
        lips = framed_mesh[list(fm.UPPER_OUTER_LIP + fm.LOWER_OUTER_LIP), :2]
        lo, hi = lips.min(0), lips.max(0)
        pad = 0.25 * (hi - lo)
        self.mouth_box = tuple(int(v) for v in (*np.floor(lo - pad), *np.ceil(hi + pad)))  # x0, y0, x1, y1
        self._out = framed.copy()

    def controls(self, audio_window: np.ndarray, index: int) -> np.ndarray:
        """(7,) warp coefficients for frame `index`, whose sound is `audio_window` (the latest 40 ms, float32)."""
        scale = float(self.options.expression_scale)
        mouth = self.mouth.push(audio_window)
        out = np.zeros(NUM_CONTROLS, np.float32)
        out[JAW] = min(MAX_JAW, mouth.opening * scale)
        out[WIDTH] = mouth.width * min(1.0, scale)
        i = index % len(self.blinks)
        out[BLINK] = self.blinks[i]
        # head motion: idle drift, larger while speaking, and a slight nod with emphasis (as head_track does)
        self.envelope += (min(1.0, 2.5 * mouth.opening) - self.envelope) * ENVELOPE_RATE * 2
        self.nod += (mouth.opening - self.nod) * 0.3
        noise = self.noise[i]
        out[ROLL] = noise[0] * (ROLL_AMP[0] + ROLL_AMP[1] * self.envelope)
        out[SHIFT_X] = noise[1] * (SHIFT_X_AMP[0] + SHIFT_X_AMP[1] * self.envelope)
        out[SHIFT_Y] = noise[2] * (SHIFT_Y_AMP[0] + SHIFT_Y_AMP[1] * self.envelope) + (
            0.0 if self.options.still_mode else NOD * self.nod)
        out[SCALE] = noise[3] * (SCALE_AMP[0] + SCALE_AMP[1] * self.envelope)
        return out

    def frame(self, audio_window: np.ndarray, index: int) -> LiveFrame:
        """Render frame `index` for the latest 40 ms of sound and encode it as JPEG."""
        coeffs = self.controls(audio_window, index)
        rgb = self.warper.render(coeffs, self._out)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG frame")
        return LiveFrame(jpeg=jpeg.tobytes(), opening=float(coeffs[JAW]), blink=float(coeffs[BLINK]))
