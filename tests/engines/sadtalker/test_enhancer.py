"""The face enhancer stage: loading the official files, alignment, batching/streaming, and paste-back geometry."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sadtalker.engines.sadtalker.enhance import (
    FFHQ_TEMPLATE_512,
    MESH_LEFT_EYE,
    MESH_MOUTH_LEFT,
    MESH_MOUTH_RIGHT,
    MESH_NOSE_TIP,
    MESH_RIGHT_EYE,
    FaceEnhancer,
    MeshFivePoints,
    align_face,
    five_points_from_detections,
    five_points_from_mesh,
    inverse_affine,
    parse_mask,
    square_mask,
    time_enhancer,
)
from sadtalker.errors import CheckpointError, InvalidInputError, NoFaceError
from sadtalker.io.image import load_image
from sadtalker.nets.gfpgan import GFPGANConfig, GFPGANv1Clean
from sadtalker.nets.parsenet import ParseNet, ParseNetConfig
from sadtalker.weights import GFPGAN_FILE, PARSENET_FILE, CheckpointLocations, forget_open_checkpoints

# Eye centres, nose tip and mouth corners of the astronaut portrait (skimage), read off the image by hand.
ASTRONAUT_FIVE = np.array([[203, 101], [247, 103], [225, 127], [205, 142], [243, 142]], dtype=np.float64)


class FixedFivePoints:
    """A five-point source that finds the same face in every frame (or none), counting its calls."""

    def __init__(self, points: np.ndarray | None) -> None:
        self.points = np.zeros((0, 5, 2)) if points is None else np.asarray(points, np.float64).reshape(-1, 5, 2)
        self.calls = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.points


@pytest.fixture(scope="module")
def astronaut(portrait_path) -> np.ndarray:
    return load_image(portrait_path)


def tiny_enhancer(points: np.ndarray | None = ASTRONAUT_FIVE, parse: bool = True, **kwargs) -> FaceEnhancer:
    """Full 512 geometry with narrow random networks: the stage's plumbing at a fraction of the cost."""
    torch.manual_seed(0)
    gfpgan = GFPGANv1Clean(GFPGANConfig(num_style_feat=32, num_mlp=1, narrow=1 / 8))
    parser = ParseNet(ParseNetConfig(base_ch=8, res_depth=1, min_ch=8, max_ch=16)) if parse else None
    return FaceEnhancer(gfpgan, parser, FixedFivePoints(points), **kwargs)


# ---- pure pieces ---------------------------------------------------------------------------------------------------

def test_align_face_maps_landmarks_onto_the_ffhq_template(astronaut):
    face, affine = align_face(astronaut, ASTRONAUT_FIVE)
    assert face.shape == (512, 512, 3) and face.dtype == np.uint8
    mapped = ASTRONAUT_FIVE @ affine[:, :2].T + affine[:, 2]
    assert np.abs(mapped - FFHQ_TEMPLATE_512).max() < 15  # a similarity fit of five hand-placed points
    scale = np.hypot(*affine[:, 0])
    assert 2.5 < scale < 3.5  # the astronaut's face (eyes 44 px apart) grows to the template's 126 px
    # Template pixels that map to outside the frame get facexlib's border grey: borderValue=(135, 133, 132) on its
    # BGR frames, i.e. (132, 133, 135) in our RGB order. Shifting the landmarks 260 px right puts the face at the
    # frame's right edge, so the right part of the template lies beyond it.
    far, far_affine = align_face(astronaut, ASTRONAUT_FIVE + [260, 0])
    back = cv2.invertAffineTransform(far_affine)
    v, u = np.mgrid[0:512, 0:512]
    src_x = back[0, 0] * u + back[0, 1] * v + back[0, 2]
    src_y = back[1, 0] * u + back[1, 1] * v + back[1, 2]
    beyond = (src_x > 512 + 1) | (src_y < -1) | (src_y > 512 + 1)  # a pixel's margin for the bilinear taps
    inside = (src_x < 512 - 2) & (src_x > 1) & (src_y > 1) & (src_y < 512 - 2)
    assert beyond.sum() > 512 * 100 and inside.sum() > 512 * 100
    assert (far[beyond] == (132, 133, 135)).all()
    assert not (far[inside] == (132, 133, 135)).all(axis=1).all()  # the image itself is not the border grey


def test_inverse_affine_round_trips_and_upscales():
    affine = cv2.estimateAffinePartial2D(ASTRONAUT_FIVE, FFHQ_TEMPLATE_512, method=cv2.LMEDS)[0]
    back = inverse_affine(affine, 1)
    mapped = FFHQ_TEMPLATE_512 @ back[:, :2].T + back[:, 2]
    fitted = ASTRONAUT_FIVE @ affine[:, :2].T + affine[:, 2]
    np.testing.assert_allclose(fitted @ back[:, :2].T + back[:, 2], ASTRONAUT_FIVE, atol=1e-9)
    up = inverse_affine(affine, 2)
    np.testing.assert_allclose(up[:, :2], 2 * back[:, :2])
    np.testing.assert_allclose(up[:, 2], 2 * back[:, 2] + 1.0)  # the original's 0.5 * upscale offset
    assert np.abs(mapped - ASTRONAUT_FIVE).max() < 5


def test_parse_mask_keeps_face_classes_and_softens_edges():
    labels = np.zeros((512, 512), np.uint8)
    labels[100:420, 120:400] = 1  # skin
    labels[100:160, 120:400] = 17  # hair on top: not face
    mask = parse_mask(labels)
    assert mask.shape == (512, 512) and mask.dtype == np.float64
    assert mask[300, 260] > 0.99  # inside the skin
    assert mask[5, 5] == 0 and mask[:10].max() == 0  # border zeroed
    assert mask[120, 260] < 0.5 < mask[300, 260]  # hair excluded
    assert 0.05 < mask[260, 120] < 0.95  # soft edge


def test_square_mask_is_soft_inside_the_warped_square():
    affine = cv2.estimateAffinePartial2D(ASTRONAUT_FIVE, FFHQ_TEMPLATE_512, method=cv2.LMEDS)[0]
    hard, soft = square_mask(inverse_affine(affine), (512, 512))
    assert hard.shape == soft.shape == (512, 512)
    assert soft[120, 225] == pytest.approx(1.0) and soft[0, 0] == 0 and soft[500, 500] == 0
    # The blur of the twice-eroded square reaches the hard mask's edge; only its float tail (as in facexlib) leaks out.
    assert soft[hard == 0].max() < 0.01
    edge = (hard > 0.99) & (soft > 0.05) & (soft < 0.95)  # a soft band of the whole face's width // 20 ~ 8 px
    assert edge.sum() > 4 * 100 * 4


def test_five_points_from_mesh_uses_documented_indices():
    mesh = np.zeros((468, 3))
    mesh[list(MESH_LEFT_EYE), :2] = [[10, 20], [20, 20], [15, 18], [15, 22]]
    mesh[list(MESH_RIGHT_EYE), :2] = [[40, 21], [50, 21], [45, 19], [45, 23]]
    mesh[MESH_NOSE_TIP, :2] = [30, 35]
    mesh[MESH_MOUTH_LEFT, :2] = [18, 50]
    mesh[MESH_MOUTH_RIGHT, :2] = [42, 50]
    np.testing.assert_allclose(five_points_from_mesh(mesh), [[15, 20], [45, 21], [30, 35], [18, 50], [42, 50]])

    class FakeMesh:  # the FaceMesh API: detect -> detections largest first; landmarks(rgb, det) -> (468, 3)
        def detect(self, rgb):
            return ["largest", "other"] if rgb.mean() > 0 else []

        def landmarks(self, rgb, det):
            assert det == "largest"
            if rgb.mean() > 100:  # FaceMesh raises when its landmark model's face flag is low
                raise NoFaceError()
            return mesh

    source = MeshFivePoints(FakeMesh())
    np.testing.assert_allclose(source(np.ones((8, 8, 3), np.uint8))[0], five_points_from_mesh(mesh))
    assert source(np.zeros((8, 8, 3), np.uint8)).shape == (0, 5, 2)
    assert source(np.full((8, 8, 3), 200, np.uint8)).shape == (0, 5, 2)


def test_five_points_from_retinaface_detections():
    dets = np.zeros((2, 15))
    dets[0, :5] = [10, 20, 110, 140, 0.99]
    dets[0, 5:] = [30, 50, 80, 51, 55, 80, 35, 110, 75, 111]
    dets[1, 5:] = np.arange(10)
    points = five_points_from_detections(dets)
    assert points.shape == (2, 5, 2)
    np.testing.assert_array_equal(points[0], [[30, 50], [80, 51], [55, 80], [35, 110], [75, 111]])
    np.testing.assert_array_equal(points[1, 4], [8, 9])
    assert five_points_from_detections(np.zeros((0, 15))).shape == (0, 5, 2)
    with pytest.raises(InvalidInputError, match="15"):
        five_points_from_detections(np.zeros((2, 14)))


def test_mesh_five_points_on_the_astronaut(astronaut):
    """Our face mesh's five points on the portrait land near the hand-placed ones (needs sadtalker.landmarks.facemesh)."""
    pytest.importorskip("sadtalker.landmarks.facemesh", reason="the face-mesh landmark stage is not in this checkout")
    points = MeshFivePoints()(astronaut)
    assert points.shape == (1, 5, 2)
    assert np.abs(points[0] - ASTRONAUT_FIVE).max() < 8
    assert MeshFivePoints()(np.full_like(astronaut, 90)).shape == (0, 5, 2)  # a blank frame: no face


# ---- the stage with tiny networks ------------------------------------------------------------------------------------

def test_frames_without_a_face_pass_through(astronaut):
    enhancer = tiny_enhancer(points=None, upscale=2)
    out = enhancer.enhance([astronaut, astronaut])
    assert enhancer.frames_without_face == 2
    expected = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LANCZOS4)
    assert all(np.array_equal(o, expected) for o in out)
    too_close = ASTRONAUT_FIVE.copy()
    too_close[1] = too_close[0] + [3, 0]  # eyes 3 px apart: dropped, as the original's eye_dist_threshold=5
    enhancer = tiny_enhancer(points=too_close)
    assert np.array_equal(enhancer.enhance([astronaut])[0], astronaut) and enhancer.frames_without_face == 1


def test_batched_parse_paste_equals_per_face_composition(astronaut):
    """Two frames in one batch, the second without a face: each output is its own frame's composition."""
    enhancer = tiny_enhancer(batch_size=2)
    frames = [astronaut, np.ascontiguousarray(astronaut[::-1])]
    enhancer.landmarks = lambda rgb: ASTRONAUT_FIVE[None] if rgb is frames[0] else np.zeros((0, 5, 2))
    out = enhancer.enhance(frames)
    face, affine = align_face(astronaut, ASTRONAUT_FIVE)
    restored = enhancer.restore(face[None])
    labels = enhancer.parse(restored)
    from sadtalker.engines.sadtalker.enhance import paste_face

    expected = paste_face(astronaut, restored[0], affine, labels[0]).astype(np.uint8)
    assert np.array_equal(out[0], expected)
    assert np.array_equal(out[1], frames[1])
    assert out[0].shape == astronaut.shape and out[0].dtype == np.uint8


def test_enhance_iter_streams_in_batches(astronaut):
    enhancer = tiny_enhancer(points=None, batch_size=2)
    pulled = []

    def frames():
        for i in range(5):
            pulled.append(i)
            yield astronaut

    stream = enhancer.enhance_iter(frames())
    next(stream)
    assert len(pulled) == 2  # one batch read, not the whole clip
    assert len(list(stream)) == 4 and len(pulled) == 5


def test_invalid_frames_and_options_are_rejected(astronaut):
    enhancer = tiny_enhancer(points=None)
    with pytest.raises(InvalidInputError, match="RGB uint8"):
        enhancer.enhance([astronaut.astype(np.float32)])
    with pytest.raises(InvalidInputError, match="RGB uint8"):
        enhancer.enhance([astronaut[..., 0]])
    with pytest.raises(InvalidInputError, match="upscale"):
        tiny_enhancer(upscale=3)
    with pytest.raises(InvalidInputError, match="batch_size"):
        tiny_enhancer(batch_size=0)


def test_random_noise_is_seeded_and_differs_from_stored_noise(astronaut):
    face = align_face(astronaut, ASTRONAUT_FIVE)[0][None]
    fixed = tiny_enhancer().restore(face)
    a = tiny_enhancer(randomize_noise=True, seed=7)
    b = tiny_enhancer(randomize_noise=True, seed=7)
    for enh in (a, b):  # noise strengths are zero in a fresh network; give them weight
        for p in enh.gfpgan.stylegan_decoder.parameters():
            if p.shape == (1,):
                p.data.fill_(1.0)
    ra, rb = a.restore(face), b.restore(face)
    assert np.array_equal(ra, rb)
    assert not np.array_equal(ra, fixed)


def test_precision_is_the_setting_and_float32_by_default(astronaut):
    """float32 unless asked (the original GFPGANer's precision, on CUDA too); bf16 reaches the networks' layers."""
    assert tiny_enhancer().precision == "fp32"
    face = align_face(astronaut, ASTRONAUT_FIVE)[0][None]
    seen: list[torch.dtype] = []
    for precision in ("fp32", "bf16"):
        enhancer = tiny_enhancer(precision=precision)
        conv = next(m for m in enhancer.gfpgan.modules() if isinstance(m, torch.nn.Conv2d))
        hook = conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        out = enhancer.restore(face)
        hook.remove()
        assert out.dtype == np.uint8 and out.shape == face.shape
    assert seen[0] == torch.float32 and torch.bfloat16 in seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the fp16 path runs only there")
def test_fp16_on_cuda_is_close_to_float32(astronaut):
    face = align_face(astronaut, ASTRONAUT_FIVE)[0][None]
    ref = tiny_enhancer().restore(face)
    fast = tiny_enhancer(device="cuda", precision="fp16")
    assert np.abs(fast.restore(face).astype(int) - ref).max() <= 3
    assert fast.enhance([astronaut])[0].shape == astronaut.shape


def test_time_enhancer_reports_per_frame_steps(astronaut):
    enhancer = tiny_enhancer(batch_size=2)
    assert enhancer.seconds_per_frame() == {}
    timing = time_enhancer(enhancer, astronaut, frames=2)
    assert timing.frames == 2 and timing.device == "cpu"
    assert timing.gfpgan > 0 and timing.parse > 0 and timing.paste > 0
    assert timing.total >= 0.9 * (timing.landmarks + timing.gfpgan + timing.parse + timing.paste)
    # the running figures after a pipeline-style stream: 3 frames in batches of 2 and 1
    enhancer.reset_timing()
    assert len(list(enhancer.enhance_iter(iter([astronaut] * 3)))) == 3
    per = enhancer.seconds_per_frame()
    assert enhancer.frames_processed == 3 and set(per) == {"landmarks", "gfpgan", "parse", "paste", "total"}
    assert per["gfpgan"] == pytest.approx(enhancer.timing["gfpgan"] / 3)
    assert per["total"] == pytest.approx(sum(enhancer.timing.values()) / 3)


# ---- official-layout files (random weights) ------------------------------------------------------------------------

def test_missing_weights_fail_with_file_name_and_download_command(tmp_path):
    locations = CheckpointLocations(checkpoint_dir=tmp_path / "checkpoints", gfpgan_dir=tmp_path / "gfpgan")
    with pytest.raises(CheckpointError, match=r"GFPGANv1\.4\.pth.*bash scripts/download_models\.sh"):
        FaceEnhancer.from_checkpoint(locations)
    (tmp_path / "gfpgan").mkdir()
    (tmp_path / "gfpgan" / GFPGAN_FILE).write_bytes(b"placeholder")
    with pytest.raises(CheckpointError, match=r"parsing_parsenet\.pth.*bash scripts/download_models\.sh"):
        FaceEnhancer.from_checkpoint(locations, use_parse=True)


def test_mismatched_file_is_a_checkpoint_error(tmp_path):
    torch.save({"params_ema": {"conv_body_first.weight": torch.zeros(32, 3, 1, 1)}}, tmp_path / GFPGAN_FILE)
    locations = CheckpointLocations(checkpoint_dir=tmp_path / "none", gfpgan_dir=tmp_path)
    with pytest.raises(CheckpointError, match="missing keys"):
        FaceEnhancer.from_checkpoint(locations, landmarks=FixedFivePoints(None), use_parse=False)
    forget_open_checkpoints()


@pytest.fixture(scope="module")
def official_enhancer(official_gfpgan_weights):
    """The enhancer as the pipeline builds it (GFPGANv1.4.pth + parsing_parsenet.pth of the session's official-layout
    random-weight files), with fixed landmarks instead of the face mesh."""
    enhancer = FaceEnhancer.from_checkpoint(official_gfpgan_weights, device="cpu",
                                            landmarks=FixedFivePoints(ASTRONAUT_FIVE), batch_size=2)
    yield enhancer
    forget_open_checkpoints()


def test_official_files_load_with_params_ema_or_params(official_gfpgan_weights, official_enhancer, tmp_path):
    state = torch.load(official_gfpgan_weights.gfpgan_dir / GFPGAN_FILE, mmap=True, weights_only=True)["params_ema"]
    key = "stylegan_decoder.style_convs.3.modulated_conv.weight"
    assert torch.equal(official_enhancer.gfpgan.state_dict()[key], state[key])
    assert official_enhancer.parser is not None  # parsing_parsenet.pth present: used by default
    parse_state = torch.load(official_gfpgan_weights.gfpgan_dir / PARSENET_FILE, mmap=True, weights_only=True)
    assert all(torch.equal(v, parse_state[k]) for k, v in official_enhancer.parser.state_dict().items())
    # older releases store only `params`; GFPGANer falls back to it
    torch.save({"params": state}, tmp_path / GFPGAN_FILE)
    fallback = FaceEnhancer.from_checkpoint(
        CheckpointLocations(checkpoint_dir=tmp_path, gfpgan_dir=tmp_path / "none"), landmarks=FixedFivePoints(None)
    )
    assert fallback.parser is None  # no parsing file there: square mask
    assert torch.equal(fallback.gfpgan.state_dict()[key], state[key])


def test_official_size_stage_on_the_astronaut(official_enhancer, astronaut):
    """Full-size GFPGAN on one frame, square mask: output keeps the frame's size, changes the face and only the face."""
    enhancer = FaceEnhancer(official_enhancer.gfpgan, None, FixedFivePoints(ASTRONAUT_FIVE), batch_size=1)
    out = enhancer.enhance(np.stack([astronaut]))
    assert len(out) == 1 and out[0].shape == astronaut.shape and out[0].dtype == np.uint8

    face, affine = align_face(astronaut, ASTRONAUT_FIVE)
    restored = enhancer.restore(face[None])[0]
    inverse = inverse_affine(affine)
    hard, soft = square_mask(inverse, (512, 512))
    warped = cv2.warpAffine(restored, inverse, (512, 512))
    outside, inside = soft == 0, soft > 1 - 1e-6  # the float32 blur peaks at 1 +- 1e-7
    assert inside.sum() > 80 * 80 and outside.sum() > 512 * 512 / 2
    assert np.array_equal(out[0][outside], astronaut[outside])  # background untouched
    # the restored face fills the face region (to within the blend's truncation to uint8, as the original's)
    assert np.abs(out[0][inside].astype(int) - warped[inside]).max() <= 1
    assert np.abs(out[0][inside].astype(int) - astronaut[inside]).mean() > 5  # and it did change
    ys, xs = np.nonzero(~outside)  # the pasted region surrounds the landmarks
    assert xs.min() < ASTRONAUT_FIVE[:, 0].min() and xs.max() > ASTRONAUT_FIVE[:, 0].max()
    assert ys.min() < ASTRONAUT_FIVE[:, 1].min() and ys.max() > ASTRONAUT_FIVE[:, 1].max()


def test_official_default_path_with_parse_mask_upscaled(official_enhancer, astronaut):
    """The pipeline's path (ParseNet mask) at the original's 2x geometry: nothing changes outside the warped face
    square, and the face square is where the change is."""
    official_enhancer.upscale = 2
    try:
        out = official_enhancer.enhance([astronaut])[0]
    finally:
        official_enhancer.upscale = 1
    assert out.shape == (1024, 1024, 3) and out.dtype == np.uint8
    background = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LANCZOS4)
    affine = align_face(astronaut, ASTRONAUT_FIVE)[1]
    square = cv2.warpAffine(np.ones((512, 512), np.float32), inverse_affine(affine, 2), (1024, 1024)) > 0
    assert np.array_equal(out[~square], background[~square])
    changed = np.abs(out.astype(int) - background).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 1000
    centre = (ASTRONAUT_FIVE * 2 + 0.5).mean(axis=0)  # the face centre in the 2x frame
    assert abs(xs.mean() - centre[0]) < 60 and abs(ys.mean() - centre[1]) < 60
