"""Source-face stage (the original's `CropAndExtract`): 68 landmarks -> the preprocess mode's crop -> landmarks on the
crop -> five-point alignment to the 3D landmark template at 224x224 -> Deep3DFaceRecon's 257 coefficients, of which
the later stages use 73 (expression 64, angles 3, translation 3, and the alignment's scale and shift).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Protocol

import cv2
import numpy as np
import torch
from PIL import Image

from sadtalker.engines.sadtalker.crop import FaceCrop, crop_face, cut, map_to_region
from sadtalker.engines.sadtalker.paste import CropInfo
from sadtalker.errors import ImageError, InvalidInputError, NoFaceError
from sadtalker.io.image import load_image
from sadtalker.nets.face_recon import FaceReconNet
from sadtalker.options import Preprocess
from sadtalker.runtime.device import Precision, autocast
from sadtalker.weights import AWING_FILE, RETINAFACE_FILE, CheckpointLocations, load

logger = logging.getLogger(__name__)

# The five template points (left eye, right eye, nose tip, left and right mouth corner; x, y, z) of the 3D face
# the original aligns to: its `load_lm3d` on `src/config/similarity_Lm3D_all.mat` (68 x 3 float32, key 'lm'),
# eye centres as the float32 means of points 37/40 and 43/46 (1-based), nose tip 31, mouth corners 49 and 55.
# Computed once from that file with scipy.io.loadmat; the values are the float32 results, written out exactly.
LM3D_FIVE = np.array([
    [-0.3114865720272064, 0.29036077857017517, 0.13377952575683594],
    [0.30979886651039124, 0.289720356464386, 0.1317952573299408],
    [0.003253498813137412, -0.04617932438850403, 0.5524424314498901],
    [-0.25216928124427795, -0.3813391625881195, 0.22405731678009033],
    [0.24846619367599487, -0.38128235936164856, 0.22235769033432007],
], dtype=np.float32)

RECON_SIZE = 224          # the reconstruction network's input
RESCALE_FACTOR = 102.0    # align_img's rescale_factor: template units -> pixels at 224
MAX_FRAMES_BEFORE_FACE = 250  # reference videos: give up when the first 10 s show no face


class Landmarker(Protocol):
    """Picture -> 68 landmarks of its (largest) face; raises NoFaceError."""

    name: str

    def __call__(self, image: np.ndarray, channels_as_given: bool = False) -> np.ndarray: ...


# 1. five points and the template fit
def five_points(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) -> (5, 2): left eye centre, right eye centre, nose tip, left and right mouth corner."""
    lm = np.asarray(lm68)
    return np.stack([lm[36:42:3].mean(0), lm[42:48:3].mean(0), lm[30], lm[48], lm[54]])


def fit_template(lm5: np.ndarray, template: np.ndarray = LM3D_FIVE) -> tuple[np.ndarray, float]:
    """Least-squares affine camera from the 3D template to the 2D points (the original's POS).

    Returns the 2D translation t (2,) and the mean scale of the two projection rows.
    """
    n = len(lm5)
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = template
    a[0::2, 3] = 1
    a[1::2, 4:7] = template
    a[1::2, 7] = 1
    b = np.asarray(lm5).reshape(2 * n, 1)
    k = np.linalg.lstsq(a, b, rcond=None)[0][:, 0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


@dataclass(frozen=True)
class AlignedFace:
    """The 224 input of the reconstruction network and how it was cut."""

    image: np.ndarray          # (224, 224, 3) uint8 RGB
    trans_params: np.ndarray   # (5,) float32: picture w, h, scale s, template translation tx, ty
    landmarks: np.ndarray      # (68, 2) in the 224 image, y up (as the original returns them)


def align_for_recon(picture: np.ndarray, lm68: np.ndarray) -> AlignedFace:
    """Scale the picture so the face matches the template at 102 px per unit and cut 224x224 around it.

    picture: (H, W, 3) uint8 RGB; lm68: (68, 2) in its pixels, y down. Landmarks are used in float32 like the
    original's detector output. Resize is PIL bicubic, then a crop at int32-truncated offsets (zero outside).
    """
    h0, w0 = picture.shape[:2]
    lm = np.array(lm68, dtype=np.float32)
    lm[:, 1] = h0 - 1 - lm[:, 1]  # y up
    t, s = fit_template(five_points(lm))
    s = RESCALE_FACTOR / s
    w, h = np.int32(w0 * s), np.int32(h0 * s)
    left = np.int32(w / 2 - RECON_SIZE / 2 + float((t[0] - w0 / 2) * s))
    up = np.int32(h / 2 - RECON_SIZE / 2 + float((h0 / 2 - t[1]) * s))
    img = Image.fromarray(picture).resize((int(w), int(h)), resample=Image.BICUBIC)
    img = img.crop((int(left), int(up), int(left) + RECON_SIZE, int(up) + RECON_SIZE))
    lm224 = np.stack([lm[:, 0] - t[0] + w0 / 2, lm[:, 1] - t[1] + h0 / 2], axis=1) * s
    lm224 = lm224 - np.array([w / 2 - RECON_SIZE / 2, h / 2 - RECON_SIZE / 2])
    trans_params = np.array([w0, h0, s, t[0], t[1]], dtype=np.float64).astype(np.float32)
    return AlignedFace(np.asarray(img, dtype=np.uint8), trans_params, lm224)


def recon_input(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(N, 224, 224, 3) uint8 -> (N, 3, 224, 224) float32 in 0..1 (divided in float64 first, as the original)."""
    x = np.stack(images).astype(np.float64) / 255.0
    return torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous().to(device)


def coeffs_73(full: np.ndarray, trans_params: np.ndarray) -> np.ndarray:
    """(N, 257) + (N, 5) -> (N, 73): expression, angles, translation, and trans_params[2:] (s, tx, ty)."""
    full = np.asarray(full, dtype=np.float32).reshape(-1, 257)
    trans_params = np.asarray(trans_params, dtype=np.float32).reshape(-1, 5)
    return np.concatenate([full[:, 80:144], full[:, 224:227], full[:, 254:257], trans_params[:, 2:]], axis=1)


@dataclass(frozen=True)
class SourceFace:
    """What the later stages need from the source portrait."""

    crop: np.ndarray           # (size, size, 3) uint8 RGB: the renderer's source picture
    crop_info: CropInfo        # where the crop lies in the picture (paste-back, output aspect)
    coeffs73: np.ndarray       # (73,) float32
    coeffs257: np.ndarray      # (257,) float32: id 80, exp 64, tex 80, angles 3, lighting 27, translation 3
    landmarks: np.ndarray      # (68, 2) float32 in picture pixels
    landmarks_crop: np.ndarray  # (68, 2) float32 in crop pixels (what the alignment used)
    aligned: AlignedFace


def smooth_landmarks(track: np.ndarray, radius: int) -> np.ndarray:
    """Centred moving average over time of (N, 68, 2) landmarks, edges repeated."""
    if radius <= 0 or len(track) < 2:
        return track
    padded = np.concatenate([track[:1].repeat(radius, 0), track, track[-1:].repeat(radius, 0)])
    kernel = np.ones(2 * radius + 1) / (2 * radius + 1)
    out = np.empty_like(track, dtype=np.float64)
    cs = np.cumsum(np.concatenate([np.zeros_like(padded[:1], dtype=np.float64), padded.astype(np.float64)]), axis=0)
    out[:] = (cs[2 * radius + 1:] - cs[: -(2 * radius + 1)]) * kernel[0]
    return out.astype(np.float32)


class SourceFaceExtractor:
    """Landmarks, crop and 3DMM coefficients of a portrait (or of every frame of a reference video).

    `redetect_on_crop`: like the original, find the landmarks again on the resized crop for the 3DMM alignment
    (falling back to the picture's landmarks mapped into the crop when that fails); otherwise map them directly.
    """

    def __init__(self, recon: FaceReconNet, landmarker: Landmarker, device: torch.device | str = "cpu",
                 redetect_on_crop: bool = True, batch_size: int = 16, video_smoothing_radius: int = 2,
                 precision: Precision = "fp32") -> None:
        self.device = torch.device(device)
        self.precision = precision
        self.recon = recon.to(self.device).eval()
        self.landmarker = landmarker
        self.redetect_on_crop = redetect_on_crop
        self.batch_size = batch_size
        self.video_smoothing_radius = video_smoothing_radius

    @classmethod
    def from_checkpoint(cls, locations: CheckpointLocations, device: torch.device | str = "cpu",
                        detector: Literal["auto", "facemesh", "retinaface"] = "auto", min_face_px: int = 40,
                        **kwargs) -> "SourceFaceExtractor":
        """Reconstruction net from the SadTalker file (`face_3drecon.*`, else legacy epoch_20.pth `net_recon`).

        detector 'auto': the original's RetinaFace + AWing when both weight files are present, else the face mesh.
        """
        device = torch.device(device)
        recon = load_recon_net(locations)
        landmarker = make_landmarker(locations, detector, device, min_face_px)
        logger.info("source-face stage ready: landmarks by %s on %s", landmarker.name, device)
        return cls(recon, landmarker, device, **kwargs)

    # 1. landmarks on the picture
    def landmarks(self, image: np.ndarray) -> np.ndarray:
        check_picture(image)
        return np.asarray(self.landmarker(image, channels_as_given=True), dtype=np.float32)

    # 2. crop, 3. landmarks on the crop, 4. coefficients
    @torch.inference_mode()
    def extract(self, image: np.ndarray, preprocess: str, size: int = 256) -> SourceFace:
        """Crop + coefficients of the portrait. Raises NoFaceError, ImageError, InvalidInputError."""
        Preprocess.parse(preprocess)
        check_picture(image)
        lm = self.landmarks(image)
        face = crop_face(image, lm, preprocess, size)
        lm_crop = self.crop_landmarks(face, lm, image.shape, preprocess, size)
        aligned = align_for_recon(face.image, lm_crop)
        with autocast(self.device, self.precision):
            full = self.recon(recon_input([aligned.image], self.device)).float().cpu().numpy()  # (1, 257)
        return SourceFace(crop=face.image, crop_info=face.crop_info, coeffs73=coeffs_73(full, aligned.trans_params)[0],
                          coeffs257=full[0], landmarks=lm, landmarks_crop=lm_crop, aligned=aligned)

    def extract_path(self, path: Path, preprocess: str, size: int = 256) -> SourceFace:
        """As `extract`, reading the picture (ImageError for a missing, corrupt or non-image file)."""
        return self.extract(load_image(Path(path)), preprocess, size)

    def crop_landmarks(self, face: FaceCrop, lm: np.ndarray, shape: tuple[int, ...], preprocess: str,
                       size: int) -> np.ndarray:
        mapped = map_to_region(lm, (shape[1], shape[0]), face.geometry, Preprocess.parse(preprocess).extended, size)
        if not self.redetect_on_crop:
            return mapped
        try:
            return np.asarray(self.landmarker(face.image), dtype=np.float32)
        except NoFaceError as exc:
            logger.info("no face found again on the %s crop (%s); using the picture's landmarks", preprocess, exc)
            return mapped

    # Reference videos
    @torch.inference_mode()
    def extract_video(self, frames: Iterable[np.ndarray], preprocess: str = "crop", size: int = 256) -> np.ndarray:
        """(N, 73) coefficients per frame of a reference video.

        As the original: every frame is cut with the crop of the first frame with a face, landmarks are found on
        each crop (a miss repeats the previous frame's), then smoothed over time (centred moving average,
        `video_smoothing_radius` frames each side; the original does not smooth). Raises NoFaceError when no
        frame has a face.
        """
        Preprocess.parse(preprocess)
        rows: list[np.ndarray] = []
        crops: list[np.ndarray] = []
        tracks: list[np.ndarray] = []
        for crop, lm in smooth_stream(self._video_landmarks(iter(frames), preprocess, size),
                                      self.video_smoothing_radius):
            crops.append(crop)
            tracks.append(lm)
            if len(crops) == self.batch_size:
                rows.append(self._coefficients(crops, tracks))
                crops, tracks = [], []
        if crops:
            rows.append(self._coefficients(crops, tracks))
        if not rows:
            raise NoFaceError("no face found in the reference video")
        return np.concatenate(rows).astype(np.float32)

    def _coefficients(self, crops: list[np.ndarray], tracks: list[np.ndarray]) -> np.ndarray:
        aligned = [align_for_recon(c, lm) for c, lm in zip(crops, tracks)]
        with autocast(self.device, self.precision):
            full = self.recon(recon_input([a.image for a in aligned], self.device)).float().cpu().numpy()
        return coeffs_73(full, np.stack([a.trans_params for a in aligned]))

    def _video_landmarks(self, frames: Iterator[np.ndarray], preprocess: str,
                         size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(crop, crop landmarks) per frame, cut with the first face's geometry; a miss repeats the last ones."""
        waiting: list[np.ndarray] = []   # frames before the first face (cut once it is known)
        first: FaceCrop | None = None
        previous: np.ndarray | None = None
        for frame in frames:
            check_picture(frame)
            if first is None:
                try:
                    lm = self.landmarks(frame)
                except NoFaceError:
                    waiting.append(frame)
                    if len(waiting) > MAX_FRAMES_BEFORE_FACE:
                        raise NoFaceError(f"no face found in the first {MAX_FRAMES_BEFORE_FACE} frames of the "
                                          "reference video") from None
                    continue
                first = crop_face(frame, lm, preprocess, size)
                previous = self.crop_landmarks(first, lm, frame.shape, preprocess, size)
                if waiting:
                    logger.info("no face in the first %d frames of the reference video", len(waiting))
            for f in waiting + [frame]:
                crop = cut_like(f, first, preprocess, size)
                try:
                    previous = np.asarray(self.landmarker(crop), dtype=np.float32)
                except NoFaceError:
                    pass
                yield crop, previous
            waiting = []


def smooth_stream(items: Iterable[tuple[np.ndarray, np.ndarray]],
                  radius: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`smooth_landmarks` on a stream of (payload, landmarks): holds only `radius` items ahead and behind."""
    history: deque[np.ndarray] = deque(maxlen=max(radius, 1))
    pending: deque[tuple[np.ndarray, np.ndarray]] = deque()

    def mean(lm: np.ndarray) -> np.ndarray:
        left = list(history)[-radius:] if radius else []
        left = [left[0] if left else lm] * (radius - len(left)) + left
        right = [p[1] for p in list(pending)[:radius]]
        right = right + [right[-1] if right else lm] * (radius - len(right))
        return np.mean(np.stack(left + [lm] + right).astype(np.float64), axis=0).astype(np.float32)

    for item in items:
        pending.append(item)
        if len(pending) > radius:
            payload, lm = pending.popleft()
            yield payload, mean(lm)
            history.append(lm)
    while pending:
        payload, lm = pending.popleft()
        yield payload, mean(lm)
        history.append(lm)


def cut_like(frame: np.ndarray, first: FaceCrop, preprocess: str, size: int) -> np.ndarray:
    """A video frame cut with the first frame's crop geometry and resized to size x size."""
    if first.geometry is None:
        return cv2.resize(frame, (size, size))
    return cv2.resize(cut(frame, first.geometry, extended=Preprocess.parse(preprocess).extended), (size, size))


def check_picture(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        kind = getattr(image, "dtype", type(image).__name__)
        raise ImageError(f"the picture must be an RGB uint8 array (H, W, 3); got {kind} {getattr(image, 'shape', '')}")
    if min(image.shape[:2]) < 16:
        raise ImageError(f"the picture is too small ({image.shape[1]}x{image.shape[0]})")


def load_recon_net(locations: CheckpointLocations) -> FaceReconNet:
    """The 3DMM regressor from the first SadTalker file present (256, then 512), else legacy epoch_20.pth."""
    return load(FaceReconNet(), "face_3drecon", locations)  # type: ignore[return-value]


def make_landmarker(locations: CheckpointLocations, detector: str, device: torch.device,
                    min_face_px: int) -> Landmarker:
    """'retinaface' (the original's detectors; their files must exist), 'facemesh', or 'auto' (the first when
    both files are present)."""
    if detector not in ("auto", "facemesh", "retinaface"):
        raise InvalidInputError(f"detector must be auto, facemesh or retinaface; got {detector!r}")
    have_original = all(locations.gfpgan_file(n).is_file() for n in (RETINAFACE_FILE, AWING_FILE))
    if detector == "retinaface" or (detector == "auto" and have_original):
        from sadtalker.landmarks.retinaface_fan import RetinaFaceAWingLandmarker

        return RetinaFaceAWingLandmarker.from_checkpoint(locations, device, min_face_px=min_face_px)
    from sadtalker.landmarks.mesh68 import FaceMeshLandmarker

    return FaceMeshLandmarker(min_face_px=min_face_px)
