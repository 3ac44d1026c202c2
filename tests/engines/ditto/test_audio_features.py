"""HuBERT features: the original's windowing and reduction, run through onnxruntime on a stand-in ONNX model with
the official interface (input `input_values` [1, 6480] float32 -> [20, 1024] per window)."""
from __future__ import annotations

import numpy as np
import pytest

from sadtalker.engines.ditto import audio_features as af
from sadtalker.errors import AudioError, CheckpointError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

WEIGHT = np.random.RandomState(0).randn(320, 1024).astype(np.float32) * 0.05


def _stand_in(path, batch_axis: bool = False, input_name: str = "input_values"):
    """6480 samples -> first 6400 as 20 frames of 320 -> linear map to 1024 (a 50 Hz feature per 20 ms)."""
    shape = [1, 20, 320] if batch_axis else [20, 320]
    out_shape = [1, 20, 1024] if batch_axis else [20, 1024]
    nodes = [
        helper.make_node("Slice", [input_name, "starts", "ends", "axes"], ["head"]),
        helper.make_node("Reshape", ["head", "shape"], ["frames"]),
        helper.make_node("MatMul", ["frames", "weight"], ["encoding_out"]),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("starts", [0]), ("ends", [6400]), ("axes", [1]), ("shape", shape))]
    inits.append(numpy_helper.from_array(WEIGHT, "weight"))
    graph = helper.make_graph(nodes, "hubert_stand_in",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 6480])],
                              [helper.make_tensor_value_info("encoding_out", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _reference(audio: np.ndarray) -> np.ndarray:
    """The same stand-in in numpy, with the original's chunking written out plainly."""
    n = int(np.ceil(len(audio) / 640))
    padded = np.concatenate([np.zeros(2000, np.float32), audio, np.zeros(6480, np.float32)])
    rows = []
    for frame in range(0, n, 5):
        enc = padded[frame * 640 : frame * 640 + 6400].reshape(20, 320) @ WEIGHT  # (20, 1024)
        rows.append(enc[-14:-4].reshape(5, 2, 1024).mean(1))
    return np.concatenate(rows)[:n]


def test_windows():
    audio = np.arange(1, 9601, dtype=np.float32)  # 0.6 s -> 15 frames -> 3 windows
    assert af.window_samples() == 6480 and af.num_video_frames(len(audio)) == 15
    windows = list(af.windows(audio))
    assert len(windows) == 3 and all(w.shape == (6480,) for w in windows)
    assert (windows[0][:2000] == 0).all() and windows[0][2000] == 1  # 2000 zeros in front of the speech
    assert windows[1][0] == 3200 - 2000 + 1  # each window 5 frames (3200 samples) later
    assert (windows[2][-80:] == 0).all()


def test_window_starts_follow_the_original_float_product():
    audio = np.arange(1620 * 640, dtype=np.float32)
    starts = {frame: int(w[0]) + 2000 for frame, w in zip(range(0, 1620, 5), af.windows(audio)) if frame >= 1610}
    assert starts == {1610: 1610 * 640, 1615: 1615 * 640 - 1}  # int(1615 * 0.04 * 16000) = 1033599


@pytest.mark.parametrize("batch_axis", [False, True])
def test_features_through_onnxruntime(tmp_path, batch_axis):
    encoder = af.HubertOnnx(_stand_in(tmp_path / "hubert.onnx", batch_axis), threads=1)
    audio = np.random.RandomState(1).randn(16000 + 123).astype(np.float32) * 0.1  # 1.0077 s -> 26 frames
    feats = af.hubert_features(audio, encoder)
    assert feats.shape == (26, 1024) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, _reference(audio), atol=1e-5)


def test_bad_models(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*download_models.sh --ditto"):
        af.HubertOnnx(tmp_path / "missing.onnx")
    with pytest.raises(CheckpointError, match="input_values"):
        af.HubertOnnx(_stand_in(tmp_path / "renamed.onnx", input_name="audio"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        af.HubertOnnx(tmp_path / "junk.onnx")


def test_bad_outputs_and_audio():
    with pytest.raises(AudioError, match="shape"):
        af.hubert_features(np.zeros(3200, np.float32), lambda w: np.zeros((8, 1024), np.float32))
    with pytest.raises(AudioError, match="mono"):
        af.hubert_features(np.zeros((2, 3200), np.float32), lambda w: np.zeros((20, 1024), np.float32))
