"""Landmark engine contact sheets: the same portraits, clip, seed and frame numbers every run, so that sheets made
before and after a change can be laid side by side.

Writes under --out (default artifacts/contact/<label>):
  frames_<portrait>.png   whole frames (crop 512) at the fixed frame numbers, with the mouth and the right eye
                          enlarged underneath
  poses_<portrait>.png    the warper driven directly: rest, blink peak, jaw at 0.5/1.0/1.6, spread and rounded
  border_<portrait>.png   the top rows of every frame under maximal head motion, stacked (streaks show as lines)

Usage: python scripts/contact_sheet.py --label after [--code DIR]   (DIR: another checkout's root, e.g. an
`git archive` of an older commit, whose SadTalker/ package is imported instead of this one's)
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("contact_sheet")

TEXT = ("Hello, my name is Maria. We see two blue moons. Oh, I agree! Bob met Pam by the map. "
        "Wow, that is a really good idea.")
SEED = 4
# frame numbers shown on every sheet (25 fps): spread over the clip, with the first blink of seed 4 (peak at 38)
FRAMES = (0, 12, 21, 38, 52, 66, 80, 95, 110, 125, 140, 155)
TILE = 192


def portraits() -> dict[str, np.ndarray]:
    """skimage's astronaut (public domain, NASA), a tight crop of it with the hair at the top edge, a darker
    exposure of it mirrored, and skimage's cameraman (grey, three-quarter view)."""
    from skimage import data

    astro = data.astronaut()
    tight = np.ascontiguousarray(astro[40:360, 70:390])
    dark = np.ascontiguousarray((255.0 * (astro[:, ::-1] / 255.0) ** 1.8 * np.array([0.92, 0.84, 0.78])).astype(np.uint8))
    camera = np.repeat(data.camera()[..., None], 3, axis=2)
    return {"astronaut": astro, "tight": tight, "dark": dark, "camera": camera}


def speech(path: Path) -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is needed (apt-get install espeak-ng)")
    subprocess.run([exe, "-s", "140", "-w", str(path), TEXT], check=True, capture_output=True)
    return path


def label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    tile = np.ascontiguousarray(tile)
    cv2.putText(tile, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
    cv2.putText(tile, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
    return tile


def zoom(frame: np.ndarray, centre: np.ndarray, half: float, size: int = TILE) -> np.ndarray:
    import cv2

    x, y = centre
    x0 = int(np.clip(x - half, 0, frame.shape[1] - 2 * half))
    y0 = int(np.clip(y - half, 0, frame.shape[0] - 2 * half))
    crop = frame[y0:y0 + int(2 * half), x0:x0 + int(2 * half)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)


def grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    width = max(len(r) for r in rows)
    blank = np.zeros((TILE, TILE, 3), np.uint8)
    return np.concatenate([np.concatenate(r + [blank] * (width - len(r)), axis=1) for r in rows], axis=0)


def frames_sheet(name: str, image_path: Path, audio: Path, out: Path, work: Path) -> None:
    import cv2

    from sadtalker.engines.landmark.engine import LandmarkEngine
    from sadtalker.io.inputs import read_inputs
    from sadtalker.io.video import iter_video_frames
    from sadtalker.landmarks import facemesh as fm
    from sadtalker.options import GenerationOptions

    options = GenerationOptions(preprocess="crop", size=512, seed=SEED)
    result = LandmarkEngine().generate(read_inputs(image_path, audio, options), options, work / f"{name}.mp4")
    frames = list(iter_video_frames(result.video_path))
    xy = fm.shared_face_mesh().landmarks(frames[0])[:, :2]
    face_h = float(np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD]))
    mouth_c = xy[list(fm.UPPER_OUTER_LIP + fm.LOWER_OUTER_LIP)].mean(0) + [0, 0.04 * face_h]
    eye_c = xy[list(fm.RIGHT_EYE_UPPER + fm.RIGHT_EYE_LOWER)].mean(0)
    whole, mouths, eyes = [], [], []
    for i in FRAMES:
        if i >= len(frames):
            continue
        whole.append(label(cv2.resize(frames[i], (TILE, TILE), interpolation=cv2.INTER_AREA), f"{name} {i}"))
        mouths.append(label(zoom(frames[i], mouth_c, 0.2 * face_h), f"mouth {i}"))
        eyes.append(label(zoom(frames[i], eye_c, 0.09 * face_h), f"eye {i}"))
    half = (len(whole) + 1) // 2
    sheet = grid([whole[:half], mouths[:half], eyes[:half], whole[half:], mouths[half:], eyes[half:]])
    cv2.imwrite(str(out / f"frames_{name}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def poses_sheet(name: str, image: np.ndarray, out: Path) -> None:
    """The warper at fixed controls (crop 512 framing): (jaw, width, blink) per tile, head still."""
    import cv2

    from sadtalker.engines.landmark.engine import apply_framing, choose_framing
    from sadtalker.engines.landmark.warp import FaceWarper
    from sadtalker.landmarks import facemesh as fm

    mesh = fm.shared_face_mesh().landmarks(image)
    framed, framed_mesh = apply_framing(image, mesh, choose_framing(image.shape, mesh, "crop", 512))
    warper = FaceWarper(framed, framed_mesh)
    xy = framed_mesh[:, :2]
    face_h = float(np.linalg.norm(xy[fm.CHIN] - xy[fm.FOREHEAD]))
    mouth_c = xy[list(fm.UPPER_OUTER_LIP + fm.LOWER_OUTER_LIP)].mean(0) + [0, 0.04 * face_h]
    eye_c = xy[list(fm.RIGHT_EYE_UPPER + fm.RIGHT_EYE_LOWER)].mean(0)
    poses = [("rest", 0, 0, 0), ("blink", 0, 0, 1), ("blink .5", 0, 0, 0.5), ("jaw .5", 0.5, 0, 0),
             ("jaw 1", 1.0, 0, 0), ("jaw 1.6", 1.6, 0, 0), ("jaw .4 wide", 0.4, 1, 0), ("jaw .5 round", 0.5, -1, 0)]
    whole, zooms = [], []
    for text, jaw, width, blink in poses:
        coeffs = np.zeros(7, np.float32)
        coeffs[:3] = (jaw, width, blink)
        frame = warper.render(coeffs, framed.copy())
        centre, half = (eye_c, 0.09 * face_h) if text.startswith("blink") else (mouth_c, 0.2 * face_h)
        zooms.append(label(zoom(frame, centre, half), text))
    sheet = grid([zooms])
    cv2.imwrite(str(out / f"poses_{name}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    del whole


def border_sheet(name: str, image: np.ndarray, out: Path) -> None:
    """Maximal head motion (roll, shift, scale at the extremes the head track reaches) in `crop`: the top 24 rows
    of each pose stacked, and the largest difference from the portrait's top rows."""
    import cv2

    from sadtalker.engines.landmark.engine import apply_framing, choose_framing
    from sadtalker.engines.landmark.warp import FaceWarper
    from sadtalker.landmarks import facemesh as fm

    mesh = fm.shared_face_mesh().landmarks(image)
    framed, framed_mesh = apply_framing(image, mesh, choose_framing(image.shape, mesh, "crop", 512))
    warper = FaceWarper(framed, framed_mesh)
    strips, worst = [], 0
    for roll in (-0.07, 0.07):
        for shift_y in (-0.05, 0.07):
            for scale in (-0.02, 0.02):
                coeffs = np.array([0.6, 0, 0, roll, 0.03, shift_y, scale], np.float32)
                frame = warper.render(coeffs, framed.copy())
                worst = max(worst, int(np.abs(frame[:2].astype(int) - framed[:2]).max()))
                strips.append(frame[:24])
                strips.append(np.zeros((2, frame.shape[1], 3), np.uint8))
    sheet = np.concatenate([framed[:24], np.full((4, framed.shape[1], 3), 255, np.uint8), *strips])
    sheet = cv2.resize(sheet, (sheet.shape[1], sheet.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(out / f"border_{name}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    logger.info("%s: top two rows differ from the portrait's by at most %d", name, worst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose SadTalker/ package to import")
    parser.add_argument("--only", nargs="*", default=None, help="portrait names to draw")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve() / "SadTalker"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from PIL import Image

    out = args.out or ROOT / "artifacts" / "contact" / args.label
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="contact-") as tmp:
        work = Path(tmp)
        audio = speech(work / "speech.wav")
        for name, image in portraits().items():
            if args.only and name not in args.only:
                continue
            path = work / f"{name}.png"
            Image.fromarray(image).save(path)
            poses_sheet(name, image, out)
            border_sheet(name, image, out)
            frames_sheet(name, path, audio, out, work)
            logger.info("%s done", name)
    logger.info("sheets in %s", out)


if __name__ == "__main__":
    main()
