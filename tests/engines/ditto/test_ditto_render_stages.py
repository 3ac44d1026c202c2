"""Ditto renderer stages on random weights: network shapes, source geometry, stitching, frames, paste-back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker.engines.ditto.face_landmarks import CropLandmarks
from sadtalker.engines.ditto.paste import PasteBack, paste_mask
from sadtalker.engines.ditto.render import FrameRenderer, precision_context
from sadtalker.engines.ditto.source import (
    CropOptions,
    SourceEncoder,
    crop_source,
    crop_transform,
    eye_conditions,
    landmarks203_reference,
)
from sadtalker.engines.ditto.stitch import MotionStitcher, StitchOptions, pose_degrees, transform_keypoints
from sadtalker.errors import InvalidInputError

KP_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def _face_points(angle_deg: float = 0.0, centre=(256.0, 260.0), size: float = 100.0) -> CropLandmarks:
    """A synthetic face: eyes above a lip, an extent box, rotated by `angle_deg` around `centre`."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    local = {"eye_left": (-0.3, -0.2), "eye_right": (0.3, -0.2), "lip": (0.0, 0.35)}
    box = np.array([(x, y) for x in (-0.5, 0.5) for y in (-0.5, 0.5)])

    def place(p):
        return (np.asarray(p) * size) @ rot.T + np.asarray(centre)
    return CropLandmarks(points=place(box).astype(np.float32), **{k: place(v) for k, v in local.items()})


def test_network_shapes(ditto_networks) -> None:
    nets = ditto_networks
    with torch.inference_mode():
        image = torch.rand(2, 3, 64, 64)
        f_s = nets["appearance_extractor"](image)
        assert f_s.shape == (2, 32, 16, 16, 16)
        info = nets["motion_extractor"](image)
        assert [tuple(t.shape) for t in info] == [(2, 66), (2, 66), (2, 66), (2, 3), (2, 63), (2, 1), (2, 63)]
        kp_s, kp_d = torch.rand(1, 21, 3) - 0.5, torch.rand(1, 21, 3) - 0.5
        volume = torch.randn(1, 32, 16, 32, 32)   # the smallest size the 5-level hourglass takes
        warped = nets["warp_network"](volume, kp_s, kp_d)
        assert warped.shape == (1, 256, 32, 32) and torch.isfinite(warped).all()
        frames = nets["decoder"](warped[:, :, :8, :8])
        assert frames.shape == (1, 3, 64, 64) and 0 <= frames.min() and frames.max() <= 1
        assert nets["stitch_network"](kp_s, kp_d).shape == (1, 21, 3)


def test_crop_of_upright_and_rotated_faces() -> None:
    upright = crop_transform(_face_points(0.0))
    assert upright.dtype == np.float32 and abs(upright[0, 1]) < 1e-6            # no rotation
    # side = 100 px x 2.3; the crop centre moves up by 0.125 of the side
    assert upright[0, 0] == pytest.approx(512 / 230, rel=1e-5)
    centre = np.linalg.solve(upright[:, :2], np.array([256.0, 256.0]) - upright[:, 2])
    assert centre == pytest.approx([256.0, 260.0 - 0.125 * 230], abs=1e-3)
    tilted = crop_transform(_face_points(20.0))
    assert np.degrees(np.arctan2(tilted[0, 1], tilted[0, 0])) == pytest.approx(20.0, abs=1e-3)
    flat = crop_transform(_face_points(20.0), CropOptions(rotate=False))
    assert flat[0, 1] == 0.0


def test_crop_source_inverse() -> None:
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    crop = crop_source(image, _face_points(10.0, centre=(300.0, 250.0)))
    assert crop.image.shape == (512, 512, 3)
    np.testing.assert_allclose(crop.M_c2o @ crop.M_o2c, np.eye(3), atol=1e-5)


def test_landmarks203_reading() -> None:
    pts = np.zeros((203, 2), np.float32)
    pts[[0, 6, 12, 18]] = (10, 20)
    pts[[24, 30, 36, 42]] = (30, 20)
    pts[48], pts[66] = (20, 40), (20, 44)
    ref = landmarks203_reference(pts)
    assert ref.eye_left.tolist() == [10, 20] and ref.eye_right.tolist() == [30, 20] and ref.lip.tolist() == [20, 42]


def test_eye_conditions_of_a_centred_iris() -> None:
    lmk = np.zeros((1, 478, 3), np.float32)
    for outer, inner, iris, x0 in ((33, 133, 468, 0.3), (263, 362, 473, 0.7)):
        lmk[0, outer, :2], lmk[0, inner, :2] = (x0 - 0.05, 0.4), (x0 + 0.05, 0.4)
        lmk[0, iris, :2] = (x0, 0.4)
    for lower, upper in ((145, 159), (144, 160), (153, 158), (374, 386), (373, 387), (380, 385)):
        lmk[0, lower, 1], lmk[0, upper, 1] = 0.41, 0.39
        lmk[0, lower, 0] = lmk[0, upper, 0] = 0.5
    eye_open, eye_ball = eye_conditions(lmk)
    assert eye_open.shape == (1, 2) and eye_ball.shape == (1, 6)
    np.testing.assert_allclose(eye_open, [[0.6, 0.6]], rtol=1e-5)   # 3 lid gaps of 0.02 over a width of 0.1
    np.testing.assert_allclose(eye_ball, 0, atol=1e-6)


def test_source_encoder_with_given_landmarks(ditto_networks) -> None:
    image = np.random.default_rng(1).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    lmk478 = np.random.default_rng(2).uniform(0.3, 0.7, (1, 478, 3)).astype(np.float32)
    encoder = SourceEncoder(ditto_networks["motion_extractor"], ditto_networks["appearance_extractor"])
    info = encoder(image, landmarks=_face_points(5.0, centre=(200.0, 210.0)), lmk478=lmk478)
    assert info.crop.image.shape == (512, 512, 3) and info.rgb256.shape == (1, 3, 256, 256)
    assert info.f_s.shape == (1, 32, 16, 64, 64)
    assert {k: v.shape for k, v in info.motion.items()} == {"pitch": (1, 66), "yaw": (1, 66), "roll": (1, 66),
                                                            "t": (1, 3), "exp": (1, 63), "scale": (1, 1),
                                                            "kp": (1, 63)}
    assert info.sc.shape == (63,)


def _random_motion(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pitch": rng.normal(0, 1, (n, 66)), "yaw": rng.normal(0, 1, (n, 66)), "roll": rng.normal(0, 1, (n, 66)),
            "t": rng.normal(0, 0.05, (n, 3)), "exp": rng.normal(0, 0.02, (n, 63)), "scale": 1 + rng.normal(0, 0.01,
                                                                                                          (n, 1)),
            "kp": rng.uniform(-0.5, 0.5, (n, 63))}


def test_first_frame_drives_nothing(ditto_networks) -> None:
    """Relative driving: frame 0 reproduces the source; later frames move only lips, eyes, pose and translation."""
    source = _random_motion(1, 0)
    driving = {k: v for k, v in _random_motion(4, 1).items() if k not in ("kp",)}
    x_s, x_d = MotionStitcher(None, StitchOptions(stitching=False))(source, driving)
    assert x_s.shape == (1, 21, 3) and x_d.shape == (4, 21, 3)
    torch.testing.assert_close(x_d[0], x_s[0], atol=1e-6, rtol=0)
    assert not torch.allclose(x_d[1], x_s[0])
    stitched = MotionStitcher(ditto_networks["stitch_network"])(source, driving)[1]
    assert stitched.shape == (4, 21, 3) and torch.isfinite(stitched).all()


def test_keypoint_transform_identity_pose() -> None:
    bins = torch.full((1, 66), -1e4)
    bins[0, 32], bins[0, 33] = 0.0, 0.0          # expectation 32.5 bins -> 0 degrees
    assert pose_degrees(bins).item() == pytest.approx(0.0, abs=1e-5)
    kp = torch.rand(1, 63)
    info = {"pitch": bins, "yaw": bins, "roll": bins, "t": torch.tensor([[0.1, 0.2, 0.3]]), "exp": torch.zeros(1, 63),
            "scale": torch.tensor([[2.0]]), "kp": kp}
    expected = kp.view(1, 21, 3) * 2 + torch.tensor([0.1, 0.2, 0.0])
    torch.testing.assert_close(transform_keypoints(info), expected, atol=1e-5, rtol=0)


class _FakeWarp(torch.nn.Module):
    """Stands in for the warping network: records batch sizes, returns (B, 256, 4, 4) from the driving keypoints."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

        self.compressed: list[torch.Tensor] = []

    def compress(self, f_s):
        self.compressed.append(f_s[:, :4])
        return self.compressed[-1]

    def forward(self, f_s, x_s, x_d, compressed=None):
        assert compressed is self.compressed[-1]       # computed once per source, reused by every batch
        self.batches.append(x_d.shape[0])
        return x_d.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand(-1, 256, 4, 4)


class _FakeDecoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, feature):
        return torch.sigmoid(self.scale * feature[:, :3].repeat_interleave(8, 2).repeat_interleave(8, 3))


def test_frames_are_an_iterator_in_batches() -> None:
    warp = _FakeWarp()
    renderer = FrameRenderer(warp, _FakeDecoder(), batch_size=2)
    f_s = torch.randn(1, 32, 16, 8, 8)
    x_s = torch.zeros(1, 21, 3)
    x_d = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 21, 3)
    frames = renderer.frames(f_s, x_s, x_d)
    first = next(frames)
    assert warp.batches == [2]                     # lazily: one batch rendered so far
    assert first.shape == (32, 32, 3) and first.dtype == np.float32
    rest = list(frames)
    assert warp.batches == [2, 1] and len(rest) == 2
    assert len(warp.compressed) == 1
    assert first.max() < rest[0].min() and rest[0].max() < rest[1].min() <= 255


def test_half_precision_only_on_cuda() -> None:
    with pytest.raises(InvalidInputError, match="CUDA"):
        precision_context("fp16", torch.device("cpu"))
    with pytest.raises(InvalidInputError, match="precision"):
        precision_context("fp8", torch.device("cuda"))  # type: ignore[arg-type]


def test_paste_mask_and_blend() -> None:
    mask = paste_mask()
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask[26:486, 26:486].min() == 1.0 and mask[0, 0] == 0.0 and mask[0, 256] == 0.0
    assert np.all(np.diff(mask[:26, 256]) > 0)
    frame = np.full((512, 512, 3), 10, np.uint8)
    render = np.full((512, 512, 3), 200.0, np.float32)
    out = PasteBack(frame, np.eye(3, dtype=np.float32))(render)
    assert out.dtype == np.uint8 and out[256, 256].tolist() == [200] * 3 and out[0, 0].tolist() == [10] * 3


def test_face_mesh_landmarks_on_a_portrait() -> None:
    """Our face mesh + iris in the roles of the original's landmark models, on skimage's astronaut."""
    pytest.importorskip("ai_edge_litert")
    from skimage import data

    from sadtalker.engines.ditto.face_landmarks import MeshLandmarker

    image = data.astronaut()
    landmarker = MeshLandmarker()
    crop = crop_source(image, landmarker.crop_landmarks(image))
    lmk = landmarker.landmarks478(crop.image)
    assert lmk.shape == (1, 478, 3)
    eyes = lmk[0, [33, 133, 263, 362], :2] * 512
    assert 200 < eyes[:, 1].mean() < 300 and 200 < eyes[:, 0].mean() < 312   # eyes a little above the crop centre
    for iris, (outer, inner) in ((468, (33, 133)), (473, (263, 362))):
        lo, hi = np.sort(lmk[0, [outer, inner], 0])
        assert lo < lmk[0, iris, 0] < hi
    eye_open, eye_ball = eye_conditions(lmk)
    assert np.all((0.2 < eye_open) & (eye_open < 1.5)) and np.all(np.abs(eye_ball) < 0.05)


@pytest.mark.slow
def test_renderer_end_to_end_small(ditto_networks) -> None:
    """Source registration + one driven frame through every stage, at full size (one 512x512 decoder pass)."""
    from sadtalker.engines.ditto.renderer import DittoRenderer

    image = np.random.default_rng(3).integers(0, 255, (300, 360, 3), dtype=np.uint8)
    lmk478 = np.random.default_rng(4).uniform(0.3, 0.7, (1, 478, 3)).astype(np.float32)
    renderer = DittoRenderer(ditto_networks)
    source = renderer.encoder(image, landmarks=_face_points(0.0, centre=(180.0, 150.0), size=60.0), lmk478=lmk478)
    driving = {k: v for k, v in _random_motion(1, 5).items() if k != "kp"}
    seen = []
    frames = list(renderer.frames(source, driving, progress=lambda f, stage: seen.append((f, stage))))
    assert len(frames) == 1 and frames[0].shape == (300, 360, 3) and frames[0].dtype == np.uint8
    assert seen == [(1.0, "render")]


def test_official_landmarker_needs_its_files(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from sadtalker.engines.ditto.official_landmarks import OfficialLandmarker
    from sadtalker.errors import CheckpointError

    with pytest.raises(CheckpointError, match="2d106det.onnx"):
        OfficialLandmarker(tmp_path / "2d106det.onnx", tmp_path / "landmark203.onnx")
