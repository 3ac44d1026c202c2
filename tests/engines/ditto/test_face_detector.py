"""The optional official face detector (det_10g.onnx through onnxruntime): a stand-in ONNX file with the detector's
interface whose outputs place known faces, the box chosen as the original chooses it, and the engine's choice of
landmarker by the files present. (Parity of the processing with the original: tests/parity/.)"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

STRIDES = (8, 16, 32)


def write_detector(path: Path, faces: list[tuple[int, int, int, float, tuple[float, ...]]], outputs: int = 9) -> Path:
    """A det_10g.onnx stand-in: input `image` (1, 3, 512, 512), nine constant outputs (scores, box distances,
    keypoints per stride); `faces` = (stride, row, col, score, distances in stride units) on the cell's first
    anchor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    arrays = []
    for kind, width in (("score", 1), ("box", 4), ("kps", 10)):
        for stride in STRIDES:
            cells = 512 // stride
            a = np.zeros((cells * cells * 2, width), np.float32)
            for s, row, col, score, distance in faces:
                if s == stride:
                    i = (row * cells + col) * 2
                    a[i] = score if kind == "score" else (distance if kind == "box" else 0.0)
            arrays.append(a)
    arrays = arrays[:outputs]
    names = [f"out{i}" for i in range(len(arrays))]
    nodes = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(a, n + "_value"))
             for n, a in zip(names, arrays)]
    graph = helper.make_graph(nodes, "det_10g_stand_in",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 512, 512])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
                               for n, a in zip(names, arrays)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


TWO_FACES = [(8, 20, 30, 0.9, (2.0, 3.0, 4.0, 5.0)),      # box (224, 136, 272, 200) on the 512 input, best score
             (32, 5, 5, 0.7, (3.0, 3.0, 3.0, 3.0)),       # box (64, 64, 256, 256): larger, chosen as the face
             (8, 20, 31, 0.6, (2.0, 3.0, 4.0, 5.0))]      # overlaps the first (IoU > 0.4): suppressed


def test_the_largest_face_is_chosen_and_overlaps_are_suppressed(tmp_path) -> None:
    from sadtalker.engines.ditto.face_detector import InsightFaceDetector

    detector = InsightFaceDetector(write_detector(tmp_path / "det_10g.onnx", TWO_FACES))
    portrait = np.zeros((1024, 1024, 3), np.uint8)   # scaled by 0.5 to the input: boxes come back doubled
    dets, kpss = detector.detect(portrait)
    assert dets.shape == (2, 5) and kpss.shape == (2, 5, 2)
    np.testing.assert_allclose(dets[:, 4], [0.9, 0.7], rtol=1e-6)   # best score first, the overlap gone
    np.testing.assert_allclose(dets[0, :4], [448, 272, 544, 400])
    np.testing.assert_allclose(detector.box(portrait), [128, 128, 512, 512])
    np.testing.assert_allclose(kpss[0], np.tile([[480.0, 320.0]], (5, 1)))  # zero offsets: the anchor centre


def test_a_wide_portrait_is_letterboxed_and_mapped_back(tmp_path) -> None:
    from sadtalker.engines.ditto.face_detector import InsightFaceDetector, detector_input

    detector = InsightFaceDetector(write_detector(tmp_path / "det_10g.onnx", TWO_FACES[1:2]))
    wide = np.full((400, 1000, 3), 200, np.uint8)
    blob, scale = detector_input(wide)
    assert blob.shape == (1, 3, 512, 512) and scale == pytest.approx(204 / 400)
    assert np.all(blob[0, :, :204] == np.float32((200 - 127.5) / 128)) and np.all(blob[0, :, 204:] == -127.5 / 128)
    np.testing.assert_allclose(detector.box(wide), np.array([64, 64, 256, 256]) / scale, rtol=1e-6)


def test_no_face_and_a_wrong_file_are_clear_errors(tmp_path) -> None:
    from sadtalker.engines.ditto.face_detector import InsightFaceDetector
    from sadtalker.errors import CheckpointError, NoFaceError

    empty = InsightFaceDetector(write_detector(tmp_path / "none.onnx", [(8, 1, 1, 0.49, (1.0, 1.0, 1.0, 1.0))]))
    with pytest.raises(NoFaceError):
        empty.box(np.zeros((300, 300, 3), np.uint8))   # a score under 0.5 is no face
    with pytest.raises(CheckpointError, match="3 outputs"):
        InsightFaceDetector(write_detector(tmp_path / "other.onnx", TWO_FACES, outputs=3))
    with pytest.raises(CheckpointError, match="not found"):
        InsightFaceDetector(tmp_path / "missing.onnx")


def test_the_engine_uses_the_detector_only_with_the_landmark_models(tmp_path, caplog) -> None:
    from sadtalker.engines.ditto.engine import default_landmarker
    from sadtalker.engines.ditto.weights import DittoCheckpoints

    checkpoints = DittoCheckpoints(root=tmp_path)
    write_detector(checkpoints.aux_file("det_10g"), TWO_FACES)
    with caplog.at_level(logging.WARNING):
        assert default_landmarker(checkpoints) is None   # our face mesh: the official crop needs all three files
    assert "needs all three" in caplog.text


def write_constant_model(path: Path, input_name: str, input_shape: list[int], output: np.ndarray) -> Path:
    """An ONNX file with one input and one constant output (stand-ins for the 106/203-point models)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Constant", [], ["out"], value=numpy_helper.from_array(output, "out_value"))
    graph = helper.make_graph([node], "stand_in", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                                                 input_shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(output.shape))])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_the_official_crop_follows_the_detectors_box(tmp_path) -> None:
    from sadtalker.engines.ditto.engine import default_landmarker
    from sadtalker.engines.ditto.weights import DittoCheckpoints

    checkpoints = DittoCheckpoints(root=tmp_path)
    write_detector(checkpoints.aux_file("det_10g"), TWO_FACES)
    lmk106 = np.zeros((106, 2), np.float32)   # in [-1, 1] of the box's crop: eyes and lip where a face has them
    lmk106[[33, 35, 40, 39]], lmk106[[87, 89, 94, 93]], lmk106[[52, 61]] = (-0.3, -0.2), (0.3, -0.2), (0.0, 0.35)
    write_constant_model(checkpoints.aux_file("landmark106"), "data", [1, 3, 192, 192], lmk106.reshape(1, 212))
    lmk203 = np.random.default_rng(0).uniform(0.3, 0.7, (203, 2)).astype(np.float32)
    lmk203[[0, 6, 12, 18]], lmk203[[24, 30, 36, 42]], lmk203[[48, 66]] = (0.35, 0.4), (0.65, 0.4), (0.5, 0.72)
    lmk203 = lmk203.reshape(1, 406)
    write_constant_model(checkpoints.aux_file("landmark203"), "input", [1, 3, 224, 224], lmk203)
    landmarker = default_landmarker(checkpoints)
    assert landmarker is not None and landmarker.detector is not None
    portrait = np.zeros((1024, 1024, 3), np.uint8)   # no face for BlazeFace: the box can only be the detector's
    np.testing.assert_allclose(landmarker.face_box(portrait), [128, 128, 512, 512])
    crop = landmarker.crop_landmarks(portrait)
    assert crop.points.shape == (203, 2) and np.isfinite(crop.points).all()
    assert 128 < crop.lip[0] < 512 and 128 < crop.lip[1] < 512   # the 203 points were read inside that box
