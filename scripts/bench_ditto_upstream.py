"""Time the ORIGINAL Ditto PyTorch path's stages in its own interpreter, for scripts/bench.py --engine ditto.

    $DITTO_UPSTREAM_PYTHON scripts/bench_ditto_upstream.py --upstream ROOT --checkpoints CK --seconds 10 \
        [--render-frames 3] [--threads 2] [--steps 50] [--warm]

Runs under the original's interpreter (what `scripts/parity_data.py --only ditto` makes) and drives the original's
classes the way ../shared/tools/ditto_parity/golden.py does (its helpers are imported from there, the original code
from the extracted snapshot; nothing is copied): AvatarRegistrar/Source2Info with the aux models (InsightFace
detector, 106/203-point landmarks, MediaPipe) answered by seeded stand-ins, ConditionHandler + Audio2Motion's
offline loop (StreamSDK._audio2motion_offline) for the whole clip, then per frame MotionStitch, WarpF3D, DecodeF3D
and PutBackNumpy, all float32 (the wrappers' fp16 autocast made inert, as for the golden data). HuBERT is not run:
the audio features are random rows of the right count (ceil(seconds * 25)), which the motion cost does not depend
on. Prints one JSON line: seconds per stage (cold = first pass, including each stage's network loading; with --warm
a second pass of the same stages with the networks loaded), per rendered frame, and the peak RSS.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO.parent / "shared" / "tools" / "ditto_parity"


class NullGolden:
    """golden.py's stage functions record their arrays through this; the benchmark keeps nothing."""

    def save(self, *args, **kwargs) -> None:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="snapshot root with ditto/core")
    ap.add_argument("--checkpoints", required=True, type=Path, help="folder with ditto_pytorch/models (official layout)")
    ap.add_argument("--image", type=Path, help="portrait (default: skimage's astronaut)")
    ap.add_argument("--box", default="180,85,290,200", help="face box for the detector stand-in (fits the astronaut)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--render-frames", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warm", action="store_true", help="run every stage a second time with the networks loaded")
    ap.add_argument("--tool", type=Path, default=TOOL, help="../shared/tools/ditto_parity")
    args = ap.parse_args()
    sys.path.insert(0, str(args.tool))
    import numpy as np
    import torch

    import golden
    import upstream

    if args.threads:
        torch.set_num_threads(args.threads)
    root = upstream.upstream_root(args.upstream)
    upstream.setup(root)
    image = args.image
    if image is None:
        from PIL import Image
        from skimage import data
        image = Path(f"/tmp/bench_ditto_upstream_{time.time_ns()}.png")
        Image.fromarray(data.astronaut()).save(image)
    ck = args.checkpoints
    si = golden.stand_ins(0, tuple(float(v) for v in args.box.split(",")))
    num_f = math.ceil(args.seconds * 25)
    feat = np.random.RandomState(0).standard_normal((num_f, 1024)).astype(np.float32)

    def one_pass() -> dict:
        secs: dict = {}
        timings: dict = {}
        info = golden.stage_source(NullGolden(), ck, image, si, timings)
        secs["load_source_nets"] = timings["source"]["load_networks"]
        secs["source"] = timings["source"]["register"]
        t = time.perf_counter()
        ch = golden.stage_condition(NullGolden(), info, feat, 4)
        cond_all = ch(feat, 0)
        secs["condition"] = time.perf_counter() - t
        x_d_list, ctrl = golden.stage_audio2motion(NullGolden(), ck, info, ch, {"aud_feat": feat, "all": cond_all},
                                                   num_f, 0, args.steps, timings)
        secs["load_lmdm"] = timings["audio2motion"]["load_network"]
        secs["motion"] = secs["condition"] + timings["audio2motion"][f"offline_loop_{args.steps}_steps"]
        secs.update(render(ck, info, x_d_list, ctrl, num_f))
        return secs

    def render(ck: Path, info: dict, x_d_list: list, ctrl: list, n: int) -> dict:
        """MotionStitch + WarpF3D + DecodeF3D + PutBackNumpy per frame, as the StreamSDK workers chain them."""
        import core.atomic_components.motion_stitch as ms_mod
        from core.atomic_components.decode_f3d import DecodeF3D
        from core.atomic_components.putback import PutBackNumpy
        from core.atomic_components.warp_f3d import WarpF3D
        out: dict = {}
        t = time.perf_counter()
        ms = ms_mod.MotionStitch({"model_path": str(ck / upstream.FILES["stitch_network"]), "device": "cpu"})
        warp = WarpF3D({"model_path": str(ck / upstream.FILES["warp_network"]), "device": "cpu"})
        dec = DecodeF3D({"model_path": str(ck / upstream.FILES["decoder"]), "device": "cpu"})
        put = PutBackNumpy()
        out["load_render_nets"] = time.perf_counter() - t
        x_s_info = info["x_s_info_lst"][0]
        ms.setup(N_d=n, use_d_keys=None, relative_d=True, drive_eye=None, delta_eye_arr=None, delta_eye_open_n=0,
                 fade_out_keys=("exp",), fade_type="", flag_stitching=True, is_image_flag=True, x_s_info=x_s_info,
                 d0=None, ch_info=None, overall_ctrl_info={})
        ms.set_Nd(n)
        f_s, frame_rgb, m = info["f_s_lst"][0], info["img_rgb_lst"][0], info["M_c2o_lst"][0]
        k = n if args.render_frames <= 0 else min(args.render_frames, n)
        t = time.perf_counter()
        with upstream.fp32(), torch.no_grad():
            for i in range(k):
                x_s, x_d = ms(x_s_info, copy.deepcopy(x_d_list[i]), **ctrl[i])
                put(frame_rgb, dec(warp(f_s, x_s, x_d)), m)
        out["render"] = time.perf_counter() - t
        out["rendered_frames"] = k
        out["render_per_frame"] = out["render"] / max(k, 1)
        return out

    result: dict = {"seconds": args.seconds, "frames": num_f, "steps": args.steps, "threads": torch.get_num_threads(),
                    "cold": one_pass()}
    if args.warm:
        result["warm"] = one_pass()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
