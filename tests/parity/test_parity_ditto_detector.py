"""The optional official face detector's processing (engines/ditto/face_detector.py) against the original Ditto's
InsightFaceDet: a golden step the ditto_parity harness does not record, made here in the original's interpreter
(ditto_upstream_detector.py) with the ONNX outputs stood in, as the harness does for the other aux models."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.parity
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> np.lib.npyio.NpzFile:
    python, root = os.environ.get("DITTO_UPSTREAM_PYTHON"), os.environ.get("DITTO_UPSTREAM_ROOT")
    harness = Path(os.environ.get("DITTO_PARITY_HARNESS", REPO.parent / "shared" / "tools" / "ditto_parity"))
    if not (python and root and (harness / "upstream.py").is_file()):
        pytest.skip("DITTO_UPSTREAM_PYTHON, DITTO_UPSTREAM_ROOT and DITTO_PARITY_HARNESS (the original Ditto's "
                    "environment, exported by scripts/parity_data.py) not set")
    out = tmp_path_factory.mktemp("ditto_detector") / "detector.npz"
    subprocess.run([python, str(Path(__file__).with_name("ditto_upstream_detector.py")), str(harness), root, str(out)],
                   check=True, capture_output=True, timeout=600)
    return np.load(out)


@pytest.mark.parametrize("shape", ["square", "wide", "tall"])
def test_detector_matches_the_original(golden, shape: str) -> None:
    from sadtalker.engines.ditto.face_detector import decode, detector_input, largest_first

    image = golden[f"{shape}_image"]
    blob, scale = detector_input(image)
    assert np.array_equal(blob, golden[f"{shape}_blob"])  # letterbox, BGR, (x - 127.5) / 128: bit-exact
    outputs = [golden[f"{shape}_out{i}"] for i in range(9)]
    dets, kpss = decode(outputs, scale)
    assert dets.shape == golden[f"{shape}_det"].shape and len(dets) > 100  # many boxes survive: NMS is exercised
    assert np.array_equal(dets, golden[f"{shape}_det"])
    assert np.array_equal(kpss, golden[f"{shape}_kpss"])
    assert np.array_equal(largest_first(dets), golden[f"{shape}_largest_first"])
    print(f"[ditto parity] detector {shape} {image.shape[1]}x{image.shape[0]}: blob 0, {len(dets)} boxes 0, "
          "keypoints 0, order 0")
