"""Run by tests/parity/test_parity_ditto_detector.py in the ORIGINAL Ditto's interpreter (DITTO_UPSTREAM_PYTHON): the
original InsightFaceDet.detect (det_10g.onnx's pre- and post-processing) on three portraits of different shapes, the
ONNX session answered by seeded stand-in outputs, and Source2Info._crop's choice of box (largest first). Writes the
detector's input blobs, the stand-in outputs and the results to an npz. The original code is imported from the
snapshot through the ditto_parity harness, never copied.

Usage: DITTO_UPSTREAM_PYTHON ditto_upstream_detector.py HARNESS_DIR UPSTREAM_ROOT OUT.npz
"""
import sys

import cv2
import numpy as np

STRIDES = (8, 16, 32)


def stand_in_outputs(rs: np.random.RandomState, size: int = 512) -> list:
    """Nine outputs shaped as det_10g's: scores (N, 1), box distances (N, 4), keypoint offsets (N, 10) per stride.
    Scores are distinct (a permutation) so that sorting has no ties; about 1 in 6 is over the 0.5 threshold."""
    counts = [(size // s) ** 2 * 2 for s in STRIDES]
    ranks = rs.permutation(sum(counts)).astype(np.float32)
    scores, start = [], 0
    for n in counts:
        scores.append((ranks[start:start + n] * np.float32(0.6 / sum(counts)))[:, None])
        start += n
    boxes = [rs.uniform(0.5, 6.0, (n, 4)).astype(np.float32) for n in counts]
    kps = [rs.uniform(-3.0, 3.0, (n, 10)).astype(np.float32) for n in counts]
    return scores + boxes + kps


def main(harness: str, root: str, out_path: str) -> None:
    sys.path.insert(0, harness)
    import upstream

    upstream.setup(upstream.upstream_root(root))
    from core.aux_models.insightface_det import InsightFaceDet
    from skimage import data

    astronaut = data.astronaut()
    images = {"square": astronaut,
              "wide": cv2.resize(astronaut, (900, 400), interpolation=cv2.INTER_AREA),
              "tall": cv2.resize(astronaut, (333, 700), interpolation=cv2.INTER_AREA)}
    rs = np.random.RandomState(7)
    result = {}
    for name, image in images.items():
        outputs = stand_in_outputs(rs)
        det = object.__new__(InsightFaceDet)
        det.model_type, det.device = "onnx", "cpu"
        det._init_vars()
        blobs = []
        det._run_model = lambda blob: blobs.append(blob.copy()) or [o.copy() for o in outputs]
        boxes, kpss = det(image)
        chosen = boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]  # as Source2Info._crop
        result.update({f"{name}_image": image, f"{name}_blob": blobs[0], f"{name}_det": boxes,
                       f"{name}_kpss": kpss, f"{name}_largest_first": chosen})
        result.update({f"{name}_out{i}": o for i, o in enumerate(outputs)})
    np.savez_compressed(out_path, **result)


if __name__ == "__main__":
    main(*sys.argv[1:4])
