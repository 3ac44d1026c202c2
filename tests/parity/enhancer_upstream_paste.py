"""Run by tests/parity/test_parity_gfpgan.py in the ORIGINAL's interpreter (UPSTREAM_PYTHON, NumPy < 1.24): facexlib's
FaceRestoreHelper aligns the astronaut with given five points and pastes a stand-in restored face (255 - aligned)
back, with and without the parsing mask, at upscale 1 and 2. Writes the results to an npz for the comparison.

Usage: UPSTREAM_PYTHON enhancer_upstream_paste.py HARNESS_DIR UPSTREAM_ROOT PARITY_DIR OUT.npz
"""
import os
import sys

import cv2
import numpy as np
import torch


def main(harness: str, root: str, parity: str, out_path: str) -> None:
    sys.path.insert(0, harness)
    import upstream  # the parity harness's import shims (no torchvision/basicsr)

    upstream.setup(root)
    import facexlib.utils.face_restoration_helper as helper_module

    def normalize(t, mean, std, inplace=False):  # torchvision's semantics; the harness stubs it out
        m = torch.tensor(mean, dtype=t.dtype).view(-1, 1, 1)
        s = torch.tensor(std, dtype=t.dtype).view(-1, 1, 1)
        return t.sub_(m).div_(s) if inplace else (t - m) / s

    helper_module.normalize = normalize
    from skimage import data

    bgr = np.ascontiguousarray(data.astronaut()[..., ::-1])
    five = np.array([[203, 101], [247, 103], [225, 127], [205, 142], [243, 142]], dtype=np.float64)
    os.chdir(parity)  # model_rootpath is relative, as in the original
    result = {"five": five, "cv2_version": np.array(cv2.__version__)}
    for upscale in (1, 2):
        for use_parse in (False, True):
            helper = helper_module.FaceRestoreHelper(
                upscale, face_size=512, crop_ratio=(1, 1), det_model="retinaface_resnet50", save_ext="png",
                use_parse=use_parse, device=torch.device("cpu"), model_rootpath="gfpgan/weights")
            helper.read_image(bgr.copy())
            helper.all_landmarks_5 = [five.copy()]
            helper.align_warp_face()
            face = helper.cropped_faces[0]
            helper.add_restored_face(np.ascontiguousarray(255 - face))
            helper.get_inverse_affine(None)
            result[f"face_{upscale}_{int(use_parse)}"] = face[..., ::-1]  # RGB
            result[f"out_{upscale}_{int(use_parse)}"] = helper.paste_faces_to_input_image()[..., ::-1]
    np.savez(out_path, **result)


if __name__ == "__main__":
    main(*sys.argv[1:5])
