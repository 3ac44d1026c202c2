"""DittoEngine without running the networks: options honoured or refused by name, the release config, missing files,
the auto-pick order, the checkpoint setting, the still-mode stitching. (Whole runs: tests/e2e/test_e2e_ditto.py.)"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker.engines.base import GenerationInputs
from sadtalker.engines.ditto.engine import DittoConfig, DittoEngine, refuse_unsupported
from sadtalker.engines.ditto.random_weights import release_cfg
from sadtalker.engines.ditto.sampler import DDIMSchedule
from sadtalker.engines.ditto.stitch import MotionStitcher, StitchOptions
from sadtalker.engines.ditto.weights import DittoCheckpoints
from sadtalker.engines.registry import ENGINES, available_engines, default_engine_name
from sadtalker.errors import CheckpointError, InvalidInputError
from sadtalker.options import GenerationOptions
from sadtalker.service.settings import ServiceSettings
from sadtalker.weights import CheckpointLocations

IMAGE = np.zeros((64, 64, 3), np.uint8)
SPEECH = np.zeros(1600, np.float32)


def inputs(**kw) -> GenerationInputs:
    return GenerationInputs(image=IMAGE, audio=kw.pop("audio", SPEECH), **kw)


@pytest.mark.parametrize("changes, words", [
    ({"preprocess": "resize"}, "preprocess 'resize'"),
    ({"preprocess": "extcrop"}, "preprocess 'extcrop'"),
    ({"enhancer": True}, "enhancer"),
    ({"input_yaw": (10.0,)}, "fixed head angles"),
    ({"idle_mode": True}, "idle mode"),
    ({"pose_style": 3}, "pose_style must be 0"),
    ({"expression_scale": 1.5}, "expression_scale"),
])
def test_unsupported_options_are_refused_by_name(changes, words):
    with pytest.raises(InvalidInputError, match="Ditto engine does not support") as err:
        refuse_unsupported(inputs(), GenerationOptions(engine="ditto", **changes))
    assert words in str(err.value)


def test_supported_options_pass():
    for changes in ({}, {"preprocess": "full"}, {"still_mode": True}, {"use_blink": False}, {"size": 512},
                    {"seed": 2**63 - 1}, {"batch_size": 4}):
        refuse_unsupported(inputs(), GenerationOptions(engine="ditto", **changes))


def test_reference_videos_and_missing_speech_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="reference videos"):
        refuse_unsupported(inputs(ref_video=tmp_path / "ref.mp4"), GenerationOptions())
    with pytest.raises(InvalidInputError, match="needs a speech clip"):
        refuse_unsupported(inputs(audio=None), GenerationOptions())


def test_config_defaults_are_the_original_sdk_defaults():
    config = DittoConfig.from_release(release_cfg())
    assert config == DittoConfig()
    assert (config.steps, config.emotion, config.overlap, config.smooth_window, config.max_size) == (50, 4, 10, 3, 1920)
    assert (config.crop.scale, config.crop.vy_ratio, config.crop.rotate) == (2.3, -0.125, True)
    assert config.stitch == StitchOptions()


def test_config_default_kwargs_are_applied():
    cfg = release_cfg()
    cfg["default_kwargs"] = {"sampling_timesteps": 10, "emo": [3, 4], "overlap_v2": 12, "smo_k_d": 5,
                             "max_size": 1024, "crop_scale": 2.0, "crop_vy_ratio": -0.1, "crop_flag_do_rot": False,
                             "relative_d": False, "drive_eye": False, "flag_stitching": False, "use_d_keys": ["exp"]}
    c = DittoConfig.from_release(cfg)
    assert (c.steps, c.emotion, c.overlap, c.smooth_window, c.max_size) == (10, [3, 4], 12, 5, 1024)
    assert (c.crop.scale, c.crop.vy_ratio, c.crop.rotate) == (2.0, -0.1, False)
    assert c.stitch == StitchOptions(relative=False, drive_eye=False, stitching=False, driven_keys=("exp",))
    assert c.motion_options.steps == 10 and c.motion_options.overlap == 12


def test_config_settings_not_implemented_are_named_in_the_log(caplog):
    cfg = release_cfg()
    cfg["default_kwargs"] = {"fade_type": "d0", "online_mode": False, "something_new": 1, "smo_k_s": 7}
    with caplog.at_level(logging.WARNING, logger="sadtalker.engines.ditto.engine"):
        DittoConfig.from_release(cfg)
    assert "fade_type" in caplog.text and "something_new" in caplog.text
    assert "online_mode" not in caplog.text and "smo_k_s" not in caplog.text   # default / video only


def test_config_of_another_model_is_refused():
    cfg = release_cfg()
    cfg["audio2motion_cfg"]["w2f_type"] = "wavlm"
    with pytest.raises(CheckpointError, match="w2f_type='wavlm'"):
        DittoConfig.from_release(cfg, "v0.4_wavlm_cfg.pkl")


def nan_step_counts() -> list[int]:
    return [n for n in range(2, 60) if not all(math.isfinite(float(c)) for c in DDIMSchedule.unchecked(n).c)]


def test_step_counts_the_original_turns_into_nan_are_refused():
    bad = nan_step_counts()   # 5 on the x86 CPUs we measured (3 on the harness's machine): platform rounding
    if not bad:
        pytest.skip("no step count below 60 gives a NaN float32 DDIM schedule on this platform")
    cfg = release_cfg()
    cfg["default_kwargs"] = {"sampling_timesteps": bad[0]}
    with pytest.raises(InvalidInputError, match=f"{bad[0]} sampling steps give a NaN"):
        DittoConfig.from_release(cfg)
    with pytest.raises(InvalidInputError, match="NaN"):
        DittoConfig(steps=bad[0])
    DittoConfig(steps=bad[0] + 1)


def test_missing_files_are_named_with_the_download_command(tmp_path):
    checkpoints = DittoCheckpoints(root=tmp_path / "ditto")
    assert len(checkpoints.missing_files()) == 8
    with pytest.raises(CheckpointError) as err:
        DittoEngine.from_checkpoint(checkpoints, device="cpu")
    message = str(err.value)
    for name in ("appearance_extractor.pth", "lmdm_v0.4_hubert.pth", "v0.4_hubert_cfg_pytorch.pkl",
                 "hubert_streaming_fix_kv.onnx"):
        assert name in message
    assert "bash scripts/download_models.sh --ditto" in message


def test_half_precision_is_refused_on_the_cpu(tmp_path):
    with pytest.raises(InvalidInputError, match="fp16 is for CUDA"):
        DittoEngine.from_checkpoint(DittoCheckpoints(root=tmp_path), device="cpu", precision="fp16")


def place_files(root: Path) -> None:
    for path in DittoCheckpoints(root=root).required_files():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_auto_prefers_ditto_then_sadtalker_then_landmark(tmp_path):
    assert ENGINES == ("ditto", "sadtalker", "landmark")
    nothing = CheckpointLocations(checkpoint_dir=tmp_path / "none", ditto_dir=tmp_path / "none" / "ditto")
    assert available_engines(nothing) == ["landmark"] and default_engine_name(nothing) == "landmark"
    place_files(tmp_path / "ditto")
    with_ditto = CheckpointLocations(checkpoint_dir=tmp_path / "none", ditto_dir=tmp_path / "ditto")
    assert available_engines(with_ditto) == ["ditto", "landmark"] and default_engine_name(with_ditto) == "ditto"
    (tmp_path / "ditto" / "ditto_cfg" / "v0.4_hubert_cfg_pytorch.pkl").unlink()   # one file missing: not offered
    assert default_engine_name(with_ditto) == "landmark"


def test_checkpoint_folder_setting(tmp_path):
    assert ServiceSettings.from_env({}).locations.ditto_dir == CheckpointLocations().ditto_dir
    assert CheckpointLocations().ditto_dir.parts[-2:] == ("checkpoints", "ditto")
    settings = ServiceSettings.from_env({"SADTALKER_DITTO_CHECKPOINTS": str(tmp_path)})
    assert settings.locations.ditto_dir == tmp_path
    assert DittoCheckpoints.from_locations(settings.locations).cfg_file == tmp_path / "ditto_cfg" / \
        "v0.4_hubert_cfg_pytorch.pkl"


def test_still_mode_keeps_the_source_head_pose():
    rs = np.random.RandomState(0)
    source = {"pitch": rs.randn(1, 66), "yaw": rs.randn(1, 66), "roll": rs.randn(1, 66), "t": rs.randn(1, 3) * 0.05,
              "exp": rs.randn(1, 63) * 0.02, "scale": np.ones((1, 1)), "kp": rs.randn(1, 63) * 0.3}
    driving = {"pitch": rs.randn(4, 66), "yaw": rs.randn(4, 66), "roll": rs.randn(4, 66), "t": rs.randn(4, 3) * 0.05,
               "exp": np.repeat(rs.randn(1, 63) * 0.02, 4, axis=0)}
    _, moving = MotionStitcher(None, StitchOptions(stitching=False))(source, driving)
    _, still = MotionStitcher(None, StitchOptions(stitching=False, driven_keys=("exp",)))(source, driving)
    assert not torch.allclose(moving[0], moving[1])      # the head follows the driving pose
    assert torch.allclose(still[0], still[3])            # same expression, source pose: the same keypoints


def test_service_names_the_ditto_download_when_its_files_are_missing(tmp_path):
    from sadtalker.service.model_service import ModelService

    locations = CheckpointLocations(checkpoint_dir=tmp_path / "none", ditto_dir=tmp_path / "none" / "ditto")
    service = ModelService(ServiceSettings(device="cpu", results_dir=tmp_path / "results", locations=locations))
    assert service.default_engine == "landmark" and "download_models.sh --ditto" in service.engine_note
    with pytest.raises(InvalidInputError, match="ditto engine is not available.*download_models.sh --ditto"):
        service.engine("ditto")
    assert service.health()["last_engine"] is None
