"""Times the ORIGINAL SadTalker on the benchmark's inputs and weights (run by scripts/bench.py, never imported by it).

Runs under the original's own interpreter (UPSTREAM_PYTHON: old NumPy) with its extracted sources (UPSTREAM_ROOT),
through the parity harness's import shims (shared/tools/parity/upstream.py). It calls the original's classes the
way its inference.py does, once per request (the original rebuilds every network per request), and prints one JSON
object of per-stage seconds on stdout.

What is measured and what is substituted:
- load_face / load_motion / load_render: the CropAndExtract, Audio2Coeff and AnimateFromCoeff constructors (the
  original's per-request model loading).
- face: CropAndExtract.generate. Its two landmark calls run the original detectors (RetinaFace + AWing, their cost
  counts) but their answers on random weights are useless, so the fixed 68-point mean face is returned instead
  (as the parity harness does).
- motion: get_data + Audio2Coeff.generate.
- render: get_facerender_data + AnimateFromCoeff.generate; `render_net` is the time inside make_animation, the rest
  (`compose_encode`) is the original's frame conversion, imageio mp4 writing, audio mux and paste-back.
- enhancer: GFPGANer needs basicsr (not installed), so only the per-frame network calls of GFPGANer.enhance are
  timed: RetinaFace detection, GFPGAN v1.4 and ParseNet on every rendered frame, plus loading them. The original's
  2x resize, warps and paste-back are not included, so this is a lower bound of the original's enhancer cost.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _mean_face(root: Path, box: tuple[float, float, float, float]) -> np.ndarray:
    """The original's 68-point mean face (test_mean_face.txt, y up) placed in an image box, y down."""
    t = np.loadtxt(root / "sadtalker/src/face3d/util/test_mean_face.txt").reshape(68, 2) * [1, -1]
    t = (t - t.min(0)) / (t.max(0) - t.min(0))
    x0, y0, x1, y1 = box
    return np.stack([x0 + t[:, 0] * (x1 - x0), y0 + t[:, 1] * (y1 - y0)], 1).astype(np.float32)


def _fixed_landmarks(cae, lm_image: np.ndarray, image_size: tuple[int, int], box, size: int) -> None:
    """Let the original's detectors run (cost counted) but answer with fixed landmarks."""
    pre = cae.propress
    det_net, detector = pre.predictor.det_net, pre.predictor.detector
    x0, y0, x1, y1 = (int(v) for v in box)
    state: dict = {}

    def run_detectors(img: np.ndarray) -> None:
        with torch.no_grad():
            det_net.detect_faces(img, 0.97)
            try:
                h, w = img.shape[:2]
                detector.get_landmarks(img[int(y0 * h / image_size[1]):int(y1 * h / image_size[1]),
                                           int(x0 * w / image_size[0]):int(x1 * w / image_size[0])])
            except IndexError:  # the original's calculate_points can index past a random-weight heatmap
                pass

    def get_landmark(img):
        run_detectors(img)
        return lm_image.copy()

    orig_crop = type(pre).crop

    def crop(img_list, still=False, xsize=512):
        frames, crop_box, quad = orig_crop(pre, img_list, still, xsize)
        state["offset"] = (crop_box[0] + (0 if still else int(quad[0])), crop_box[1] + (0 if still else int(quad[1])))
        state["region"] = frames[0].shape[:2]
        return frames, crop_box, quad

    class Keypoints:
        det_net = pre.predictor.det_net
        detector = pre.predictor.detector

        @staticmethod
        def extract_keypoint(images, name=None, info=True):
            out = []
            for image in images:
                run_detectors(np.array(image))
                if "region" in state:
                    (h, w), (ox, oy) = state["region"], state["offset"]
                else:
                    (w, h), ox, oy = image_size, 0, 0
                out.append(((lm_image - [ox, oy]) * [size / w, size / h]).astype(np.float32)[None])
            return np.concatenate(out, 0)

    pre.get_landmark = get_landmark
    pre.crop = crop
    pre.predictor = Keypoints()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, type=Path, help="UPSTREAM_ROOT (sadtalker/src, gfpgan/, facexlib/)")
    ap.add_argument("--harness", required=True, type=Path, help="shared/tools/parity (upstream.py)")
    ap.add_argument("--checkpoints", required=True, type=Path)
    ap.add_argument("--gfpgan-weights", required=True, type=Path)
    ap.add_argument("--image", required=True, type=Path)
    ap.add_argument("--audio", required=True, type=Path, help="16 kHz wav")
    ap.add_argument("--preprocess", default="crop")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--enhancer", action="store_true")
    ap.add_argument("--box", default="180,85,290,200", help="face box for the fixed landmarks")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(args.harness))
    import upstream  # the harness: snapshot on sys.path + import shims

    root = args.root.resolve()
    upstream.setup(root)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-upstream-"))
    # The original finds RetinaFace/AWing under ./gfpgan/weights and calls `ffmpeg` from PATH.
    (work / "gfpgan").mkdir()
    os.symlink(args.gfpgan_weights.resolve(), work / "gfpgan" / "weights")
    bindir = work / "bin"
    bindir.mkdir()
    import imageio_ffmpeg
    os.symlink(imageio_ffmpeg.get_ffmpeg_exe(), bindir / "ffmpeg")
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.chdir(work)
    secs: dict[str, float] = {}
    result: dict = {"stages": secs, "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        import src.facerender.animate as animate_mod
        from PIL import Image
        from src.facerender.animate import AnimateFromCoeff
        from src.generate_batch import get_data
        from src.generate_facerender_batch import get_facerender_data
        from src.test_audio2coeff import Audio2Coeff
        from src.utils.init_path import init_path
        from src.utils.preprocess import CropAndExtract

        paths = init_path(str(args.checkpoints.resolve()), str(root / "sadtalker/src/config"), args.size, False,
                          args.preprocess)
        t = time.perf_counter()
        cae = CropAndExtract(paths, "cpu")
        secs["load_face"] = time.perf_counter() - t
        t = time.perf_counter()
        a2c = Audio2Coeff(paths, "cpu")
        secs["load_motion"] = time.perf_counter() - t
        t = time.perf_counter()
        afc = AnimateFromCoeff(paths, "cpu")
        secs["load_render"] = time.perf_counter() - t

        request_start = time.perf_counter()  # request_total excludes loading, as for ours
        # 2. face: crop + 3DMM coefficients
        image = Image.open(args.image).convert("RGB")
        box = tuple(float(v) for v in args.box.split(","))
        _fixed_landmarks(cae, _mean_face(root, box), image.size, box, args.size)
        first_dir = work / "first_frame_dir"
        first_dir.mkdir()
        t = time.perf_counter()
        first_coeff, crop_pic, crop_info = cae.generate(str(args.image), str(first_dir), args.preprocess,
                                                        source_image_flag=True, pic_size=args.size)
        secs["face"] = time.perf_counter() - t

        # 4. motion
        t = time.perf_counter()
        batch = get_data(first_coeff, str(args.audio), "cpu", None, still=False)
        coeff_path = a2c.generate(batch, str(work), 0, None)
        secs["motion"] = time.perf_counter() - t

        # 5. render + compose + encode
        frames_kept: list = []
        net_time = [0.0]
        orig_make = animate_mod.make_animation

        def timed_make_animation(*a, **k):
            t0 = time.perf_counter()
            out = orig_make(*a, **k)
            net_time[0] += time.perf_counter() - t0
            frames_kept.append(out)
            return out
        animate_mod.make_animation = timed_make_animation
        t = time.perf_counter()
        data = get_facerender_data(coeff_path, crop_pic, first_coeff, str(args.audio), args.batch_size,
                                   None, None, None, expression_scale=1.0, still_mode=False,
                                   preprocess=args.preprocess, size=args.size)
        afc.generate(data, str(work), str(args.image), crop_info, enhancer=None, background_enhancer=None,
                     preprocess=args.preprocess, img_size=args.size)
        render_total = time.perf_counter() - t
        frames = int(data["frame_num"])
        secs["render_net"] = net_time[0]
        secs["compose_encode"] = render_total - net_time[0]
        result["frames"] = frames

        if args.enhancer:
            secs["enhancer"] = _enhancer_networks(root, args.gfpgan_weights, frames_kept[0], frames, upstream)
        secs["request_total"] = time.perf_counter() - request_start
        result["peak_rss_mb"] = _rss_peak_mb()
    finally:
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


def _enhancer_networks(root: Path, weights: Path, video: torch.Tensor, frames: int, upstream) -> float:
    """Lower bound of the original's enhancer: load + per frame RetinaFace, GFPGAN (512) and ParseNet."""
    t = time.perf_counter()
    from facexlib.detection import init_detection_model
    from facexlib.parsing import init_parsing_model
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean
    det = init_detection_model("retinaface_resnet50", half=False, device="cpu", model_rootpath="gfpgan/weights")
    parse = init_parsing_model("parsenet", device="cpu", model_rootpath="gfpgan/weights")
    net = GFPGANv1Clean(**upstream.GFPGAN_CLEAN_ARGS)
    net.load_state_dict(torch.load(weights / "GFPGANv1.4.pth", map_location="cpu")["params_ema"], strict=True)
    net.eval()
    images = video.reshape((-1,) + video.shape[2:])[:frames]
    with torch.no_grad():
        for img in images:
            bgr = (img.permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)
            det.detect_faces(np.ascontiguousarray(bgr), 0.97)
            face = torch.nn.functional.interpolate(img[None] * 2 - 1, size=(512, 512), mode="bilinear")
            net(face, return_rgb=False, weight=0.5)
            parse(face)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
