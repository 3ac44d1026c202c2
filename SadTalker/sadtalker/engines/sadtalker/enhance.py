"""Face enhancer stage: GFPGAN v1.4 restoration of each rendered frame's face (the original's `--enhancer gfpgan`,
`src/utils/face_enhancer.py` over GFPGAN's `GFPGANer` and facexlib's `FaceRestoreHelper`).

Per frame: five landmarks -> similarity warp to the 512 FFHQ template -> GFPGAN -> paste back with a soft mask
(ParseNet's face classes when `parsing_parsenet.pth` is present, else an eroded, blurred square) at the frame's
own resolution. The original also upscales the whole frame 2x (LANCZOS4 for the background, `upscale=2`); we keep
the input resolution by default (`upscale=1`): the output video keeps the size the user chose, and the 2x resize
adds no detail outside the face. `upscale=2` reproduces the original's geometry.

Noise: GFPGANer draws fresh StyleGAN noise for every face (`randomize_noise=True`); on video that makes fine
texture flicker from frame to frame, so by default we use the checkpoint's stored noise maps (deterministic,
identical output for identical faces); `randomize_noise=True, seed=...` gives the original's behaviour.
Precision is the service's setting: float32 by default everywhere, as the original GFPGANer runs; fp16/bf16 run
the networks under autocast (meant for CUDA; demodulation stays in float32).
Landmarks come from a `FivePointSource` callable (default: our face mesh); the original used RetinaFace's five
points, and any detector giving them in the same order plugs in through `from_checkpoint(..., landmarks=...)`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Protocol, Sequence

import cv2
import numpy as np
import torch

from sadtalker.errors import CheckpointError, InvalidInputError, NoFaceError
from sadtalker.nets.gfpgan import GFPGANv1Clean
from sadtalker.nets.parsenet import NON_FACE_CLASSES, ParseNet
from sadtalker.runtime.device import Precision, autocast
from sadtalker.weights import GFPGAN_FILE, PARSENET_FILE, CheckpointLocations, load

logger = logging.getLogger(__name__)

FACE_SIZE = 512
# The five FFHQ landmarks at 512 px (left eye, right eye, nose tip, left and right mouth corner, in image terms).
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64,
)
BORDER_RGB = (132, 133, 135)  # the original's warp border (135, 133, 132) in BGR
MIN_EYE_DISTANCE = 5.0  # px: the original drops detections with closer eyes (side or tiny faces)
MASK_BLUR_KERNEL, MASK_BLUR_SIGMA, MASK_BORDER = 101, 11, 10  # parse-mask softening (applied twice), border zeroed

# MediaPipe face-mesh (468 points) indices for the five points: eye centres as the mean of the two corners and the
# middles of the upper and lower lids, the nose tip, and the outer mouth corners. "left" is the image's left.
MESH_LEFT_EYE = (33, 133, 159, 145)
MESH_RIGHT_EYE = (362, 263, 386, 374)
MESH_NOSE_TIP = 1
MESH_MOUTH_LEFT = 61
MESH_MOUTH_RIGHT = 291


class FivePointSource(Protocol):
    """Gives the faces of an RGB frame as five landmarks each, largest face first: (N, 5, 2) px, N >= 0."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...


def five_points_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(468, 2 or 3) face-mesh points in px -> (5, 2) in the FFHQ template's order."""
    xy = np.asarray(mesh, dtype=np.float64)[:, :2]
    return np.stack([
        xy[list(MESH_LEFT_EYE)].mean(axis=0), xy[list(MESH_RIGHT_EYE)].mean(axis=0),
        xy[MESH_NOSE_TIP], xy[MESH_MOUTH_LEFT], xy[MESH_MOUTH_RIGHT],
    ])


def five_points_from_detections(detections: np.ndarray) -> np.ndarray:
    """RetinaFace detections as facexlib gives them, (N, 15): box (4), score, then the five landmarks as x, y pairs
    (left eye, right eye, nose tip, left and right mouth corner) -> (N, 5, 2), in the detections' order.

    The seam for a RetinaFace-based `FivePointSource` (the original's detector)."""
    dets = np.asarray(detections, dtype=np.float64)
    if dets.ndim != 2 or dets.shape[1] != 15:
        raise InvalidInputError(f"RetinaFace detections must be (N, 15); got {dets.shape}")
    return dets[:, 5:15].reshape(-1, 5, 2)


class MeshFivePoints:
    """Five points of the largest face from our face-mesh landmarker (`sadtalker.landmarks.facemesh.FaceMesh`)."""

    def __init__(self, mesh: object | None = None) -> None:
        if mesh is None:
            from sadtalker.landmarks.facemesh import (
                shared_face_mesh,  # the landmark stage; imported lazily to keep this module light
            )

            mesh = shared_face_mesh()
        self.mesh = mesh

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        detections = self.mesh.detect(rgb)  # type: ignore[attr-defined]
        if not detections:
            return np.zeros((0, 5, 2))
        try:
            points = self.mesh.landmarks(rgb, detections[0])  # type: ignore[attr-defined]  # (468, 3) px
        except NoFaceError:  # the landmark model rejected the detection (its face flag is low)
            return np.zeros((0, 5, 2))
        return five_points_from_mesh(points)[None]


def align_face(frame: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp the face with these five points onto the 512 FFHQ template.

    Returns the (512, 512, 3) face and the 2x3 frame->face affine matrix (similarity, LMEDS fit as the original).
    """
    affine = cv2.estimateAffinePartial2D(np.asarray(points, np.float64), FFHQ_TEMPLATE_512, method=cv2.LMEDS)[0]
    if affine is None:
        raise InvalidInputError(f"five landmarks {np.asarray(points).tolist()} do not define a face alignment")
    face = cv2.warpAffine(frame, affine, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_RGB)
    return face, affine


def inverse_affine(affine: np.ndarray, upscale: int = 1) -> np.ndarray:
    """face->output-frame matrix, with the original's half-pixel offset when upscaling."""
    inverse = cv2.invertAffineTransform(affine) * upscale
    if upscale > 1:
        inverse[:, 2] += 0.5 * upscale
    return inverse


def parse_mask(labels: np.ndarray) -> np.ndarray:
    """(512, 512) ParseNet class labels -> soft face mask in [0, 1] (float64), as the original builds it."""
    table = np.full(256, 255.0)
    table[list(NON_FACE_CLASSES)] = 0.0
    mask = table[labels.astype(np.uint8)]
    for _ in range(2):
        mask = cv2.GaussianBlur(mask, (MASK_BLUR_KERNEL, MASK_BLUR_KERNEL), MASK_BLUR_SIGMA)
    mask[:MASK_BORDER, :] = 0
    mask[-MASK_BORDER:, :] = 0
    mask[:, :MASK_BORDER] = 0
    mask[:, -MASK_BORDER:] = 0
    return mask / 255.0


def square_mask(inverse: np.ndarray, out_size: tuple[int, int], upscale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the warped-back 512 square when no parsing network is available (the original's `use_parse=False`
    branch): the hard mask eroded by `2 * upscale` px (applied to the face), and the soft blend mask, eroded again
    and blurred over a width proportional to the face size. Both (H, W) float32 in [0, 1]."""
    warped = cv2.warpAffine(np.ones((FACE_SIZE, FACE_SIZE), np.float32), inverse, out_size)
    k = int(2 * upscale)
    hard = cv2.erode(warped, np.ones((k, k), np.uint8))
    edge = int(np.sum(hard) ** 0.5) // 20
    if edge == 0:  # a face of under ~20 px: nothing to soften
        return hard, hard
    center = cv2.erode(hard, np.ones((2 * edge, 2 * edge), np.uint8))
    return hard, cv2.GaussianBlur(center, (2 * edge + 1, 2 * edge + 1), 0)


def paste_face(background: np.ndarray, face: np.ndarray, affine: np.ndarray, labels: np.ndarray | None,
               upscale: int = 1) -> np.ndarray:
    """Blend a restored 512 face back into `background` (already at the output resolution).

    labels: ParseNet labels of the restored face, or None for the square mask. Returns float64 (H, W, 3); the
    caller truncates to uint8 once all faces are in (as the original).
    """
    h, w = background.shape[:2]
    inverse = inverse_affine(affine, upscale)
    warped_face = cv2.warpAffine(face, inverse, (w, h))
    if labels is not None:
        mask = cv2.warpAffine(parse_mask(labels), inverse, (w, h), flags=cv2.INTER_AREA)
        pasted = warped_face
    else:
        hard, mask = square_mask(inverse, (w, h), upscale)
        pasted = hard[:, :, None] * warped_face
    mask = mask[:, :, None]
    return mask * pasted + (1 - mask) * background


def _to_uint8_rgb(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded (basicsr's tensor2img)."""
    x = (x.float().clamp(-1, 1) + 1) / 2
    return (x.permute(0, 2, 3, 1).cpu().numpy() * 255.0).round().astype(np.uint8)


def _to_input(faces: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, 512, 512, 3) uint8 RGB -> (B, 3, 512, 512) float32 in [-1, 1]."""
    x = (faces.astype(np.float64) / 255.0).astype(np.float32)
    return ((torch.from_numpy(x).permute(0, 3, 1, 2) - 0.5) / 0.5).contiguous().to(device)


@dataclass
class EnhancerTiming:
    """Seconds per frame of each step of `FaceEnhancer` (see `time_enhancer`)."""

    landmarks: float
    gfpgan: float
    parse: float
    paste: float
    total: float
    frames: int
    device: str


class FaceEnhancer:
    """GFPGAN v1.4 face restoration for video frames, batched and streamed.

    Build with `from_checkpoint`. `enhance`/`enhance_iter` take RGB uint8 frames (H, W, 3) and give RGB uint8
    frames of (H * upscale, W * upscale). Frames without a detected face pass through (resized when upscaling).
    """

    def __init__(self, gfpgan: GFPGANv1Clean, parser: ParseNet | None, landmarks: FivePointSource, *,
                 device: str | torch.device = "cpu", upscale: Literal[1, 2] = 1, batch_size: int = 4,
                 randomize_noise: bool = False, seed: int | None = None, precision: Precision = "fp32") -> None:
        if upscale not in (1, 2):
            raise InvalidInputError(f"upscale must be 1 or 2; got {upscale!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.device = torch.device(device)
        self.gfpgan = gfpgan.to(self.device).eval()
        self.parser = parser.to(self.device).eval() if parser is not None else None
        self.landmarks = landmarks
        self.upscale = upscale
        self.batch_size = batch_size
        self.randomize_noise = randomize_noise
        self.precision = precision
        self.generator: torch.Generator | None = None
        if randomize_noise and seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.frames_without_face = 0
        self.frames_processed = 0
        self.timing = {"landmarks": 0.0, "gfpgan": 0.0, "parse": 0.0, "paste": 0.0}  # seconds, summed over frames

    @classmethod
    def from_checkpoint(cls, locations: CheckpointLocations, device: str | torch.device = "cpu", *,
                        landmarks: FivePointSource | None = None, use_parse: bool | None = None,
                        **kwargs: object) -> "FaceEnhancer":
        """Load GFPGANv1.4.pth (`params_ema`, else `params`) and, if present (or `use_parse=True`),
        parsing_parsenet.pth from `locations` (gfpgan/weights/, then checkpoints/).

        Args:
            landmarks: the five-point source; default our face mesh (`MeshFivePoints`).
            use_parse: None = use ParseNet when its file is there; True = require it; False = square mask.
            kwargs: passed to `FaceEnhancer` (upscale, batch_size, randomize_noise, seed, precision).
        Raises:
            CheckpointError: a needed file is missing or does not match, naming it and the download command.
        """
        path = locations.gfpgan_file(GFPGAN_FILE)
        parse_path = locations.gfpgan_file(PARSENET_FILE)
        with_parse = use_parse if use_parse is not None else parse_path.is_file()
        for needed, name, role in ((path, GFPGAN_FILE, "face enhancer"), (parse_path, PARSENET_FILE, "parsing mask")):
            if (name == GFPGAN_FILE or with_parse) and not needed.is_file():
                raise CheckpointError(
                    f"the {role} needs {name}, not found in {locations.gfpgan_dir} or {locations.checkpoint_dir}. "
                    f"Download it with: {locations.download_hint}"
                )
        gfpgan = load(GFPGANv1Clean(), "gfpgan", locations)
        parser = None
        if with_parse:
            parser = load(ParseNet(), "parsenet", locations)
        else:
            logger.info("%s not used: pasting faces back with a square soft mask", PARSENET_FILE)
        return cls(gfpgan, parser, landmarks if landmarks is not None else MeshFivePoints(),
                   device=device, **kwargs)  # type: ignore[arg-type]

    def reset_timing(self) -> None:
        """Zero the step timings and frame counters (e.g. after a warm-up)."""
        self.timing = dict.fromkeys(self.timing, 0.0)
        self.frames_processed = 0
        self.frames_without_face = 0

    def seconds_per_frame(self) -> dict[str, float]:
        """Mean seconds per frame of each step (and `total`) over the frames enhanced since the last reset; for the
        speed benchmark, which can read it after a real pipeline run. Empty before any frame."""
        if self.frames_processed == 0:
            return {}
        per = {k: v / self.frames_processed for k, v in self.timing.items()}
        per["total"] = sum(per.values())
        return per

    def enhance(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Enhance all frames (RGB uint8 (H, W, 3) each); see `enhance_iter` for long clips."""
        return list(self.enhance_iter(frames))

    def enhance_iter(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Stream: reads `batch_size` frames, yields them enhanced, so memory stays flat over any clip length."""
        batch: list[np.ndarray] = []
        for frame in frames:
            batch.append(_check_frame(frame))
            if len(batch) == self.batch_size:
                yield from self._enhance_batch(batch)
                batch = []
        if batch:
            yield from self._enhance_batch(batch)

    @torch.inference_mode()
    def restore(self, faces: np.ndarray) -> np.ndarray:
        """(B, 512, 512, 3) aligned RGB uint8 faces -> restored faces, same layout."""
        x = _to_input(faces, self.device)  # (B, 3, 512, 512)
        with autocast(self.device, self.precision):
            y = self.gfpgan(x, randomize_noise=self.randomize_noise, generator=self.generator)
        return _to_uint8_rgb(y)

    @torch.inference_mode()
    def parse(self, faces: np.ndarray) -> np.ndarray:
        """(B, 512, 512, 3) RGB uint8 faces -> (B, 512, 512) ParseNet class labels (uint8)."""
        if self.parser is None:
            raise InvalidInputError("this FaceEnhancer was built without the parsing network")
        x = _to_input(faces, self.device)
        with autocast(self.device, self.precision):
            logits = self.parser(x)[0]  # (B, 19, 512, 512)
        return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()

    def _enhance_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        # 1. five landmarks per face, alignment to the FFHQ template
        t0 = time.perf_counter()
        faces, affines, owners = [], [], []
        for index, frame in enumerate(frames):
            points = np.asarray(self.landmarks(frame), dtype=np.float64).reshape(-1, 5, 2)
            kept = 0
            for pts in points:
                if np.linalg.norm(pts[0] - pts[1]) < MIN_EYE_DISTANCE:
                    continue
                face, affine = align_face(frame, pts)
                faces.append(face)
                affines.append(affine)
                owners.append(index)
                kept += 1
            if kept == 0:
                self.frames_without_face += 1
                logger.debug("enhancer: no face in frame %d of this batch; passing it through", index)
        t1 = time.perf_counter()

        # 2. restoration and 3. parsing, one network call each for the whole batch
        restored = self.restore(np.stack(faces)) if faces else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        t2 = time.perf_counter()
        labels = self.parse(restored) if (self.parser is not None and faces) else None
        t3 = time.perf_counter()

        # 4. paste back at the output resolution
        out = []
        for index, frame in enumerate(frames):
            h, w = frame.shape[:2]
            canvas: np.ndarray = frame if self.upscale == 1 else cv2.resize(
                frame, (w * self.upscale, h * self.upscale), interpolation=cv2.INTER_LANCZOS4)
            pasted = False
            for k in (k for k, owner in enumerate(owners) if owner == index):
                canvas = paste_face(canvas, restored[k], affines[k], None if labels is None else labels[k],
                                    self.upscale)
                pasted = True
            out.append(canvas.astype(np.uint8) if pasted else canvas.copy())
        t4 = time.perf_counter()
        for key, dt in zip(self.timing, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.timing[key] += dt
        self.frames_processed += len(frames)
        return out


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidInputError(
            f"the enhancer takes RGB uint8 frames of shape (H, W, 3); got {frame.dtype} {tuple(frame.shape)}"
        )
    return np.ascontiguousarray(frame)  # OpenCV needs positive strides (flipped or sliced views)


def time_enhancer(enhancer: FaceEnhancer, frame: np.ndarray, frames: int = 2, warmup: bool = True) -> EnhancerTiming:
    """Seconds per frame of `enhancer` on `frames` copies of `frame` (one batch per `batch_size`), by step.

    For the speed benchmark; a warm-up batch (not counted) absorbs one-time costs (CUDA kernels, allocator).
    """
    if warmup:
        enhancer.enhance([frame])
    enhancer.reset_timing()
    if enhancer.device.type == "cuda":
        torch.cuda.synchronize(enhancer.device)
    start = time.perf_counter()
    enhancer.enhance([frame] * frames)
    if enhancer.device.type == "cuda":
        torch.cuda.synchronize(enhancer.device)
    total = time.perf_counter() - start
    per = {k: v / frames for k, v in enhancer.timing.items()}
    return EnhancerTiming(total=total / frames, frames=frames, device=str(enhancer.device), **per)
