"""SadTalker/inference.py: the original's options, errors as one message and a non-zero exit, the output path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import inference
import numpy as np
import pytest
import torch
from pipeline_doubles import StandInFaceStage, StandInMotionStage
from renderer_factory import tiny_renderer

from sadtalker.engines.sadtalker.pipeline import SadTalkerPipeline
from sadtalker.io.video import probe
from sadtalker.weights import MAPPING_CROP, MAPPING_FULL, SADTALKER_FILES

SCRIPT = Path(__file__).resolve().parents[2] / "SadTalker" / "inference.py"


@pytest.fixture
def placeholder_checkpoints(tmp_path: Path) -> Path:
    """The 256 files present by name (contents are never read by the checks under test)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in (SADTALKER_FILES[256], MAPPING_CROP, MAPPING_FULL):
        (folder / name).write_bytes(b"")
    return folder


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = inference.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_original_options_and_seed():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--source_image", "--driven_audio", "--ref_eyeblink", "--ref_pose", "--checkpoint_dir",
                 "--result_dir", "--pose_style", "--batch_size", "--size", "--expression_scale", "--input_yaw",
                 "--input_pitch", "--input_roll", "--enhancer", "--still", "--preprocess", "--cpu", "--seed",
                 "--precision", "--engine"):
        assert flag in proc.stdout


def test_missing_checkpoints_exit_non_zero_naming_the_files_and_the_script(portrait_path, speech_path, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--source_image", str(portrait_path), "--driven_audio",
                           str(speech_path), "--checkpoint_dir", str(tmp_path / "none"),
                           "--result_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "SadTalker_V0.0.2_256.safetensors" in proc.stderr and MAPPING_FULL in proc.stderr
    assert "bash scripts/download_models.sh" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_512_and_enhancer_files_are_named(capsys, portrait_path, speech_path, placeholder_checkpoints,
                                                  monkeypatch, tmp_path):
    monkeypatch.setenv("SADTALKER_GFPGAN_WEIGHTS", str(tmp_path / "gfpgan"))
    code, _, err = run_main(capsys, "--source_image", str(portrait_path), "--driven_audio", str(speech_path),
                            "--checkpoint_dir", str(placeholder_checkpoints), "--size", "512", "--enhancer", "gfpgan")
    assert code == 1
    assert "SadTalker_V0.0.2_512.safetensors" in err and "GFPGANv1.4.pth" in err
    assert SADTALKER_FILES[256] not in err


@pytest.mark.parametrize("extra,message", [
    (("--pose_style", "50"), "pose_style must be between 0 and 45; got 50"),
    (("--expression_scale", "9"), "expression_scale must be a number between 0 and 3"),
    (("--seed", str(2**63)), "seed must be between 0 and 2^63-1"),
    (("--batch_size", "0"), "batch_size must be between 1"),
    (("--input_yaw", "120"), "input_yaw must be a list of at most 64 angles between -90 and 90"),
    (("--ref_pose", "missing_pose.mp4"), "reference video not found: missing_pose.mp4"),
])
def test_bad_options_are_one_line_errors(capsys, portrait_path, speech_path, extra, message):
    code, out, err = run_main(capsys, "--source_image", str(portrait_path), "--driven_audio", str(speech_path), *extra)
    assert code == 2 and message in err and out == ""


def test_bad_inputs_are_one_line_errors(capsys, portrait_path, speech_path, silent_path, tmp_path):
    code, _, err = run_main(capsys, "--source_image", str(tmp_path / "nobody.png"), "--driven_audio", str(speech_path))
    assert code == 2 and "image file not found: nobody.png" in err
    code, _, err = run_main(capsys, "--source_image", str(portrait_path), "--driven_audio", str(silent_path))
    assert code == 2 and "the audio is silent" in err
    code, _, err = run_main(capsys, "--source_image", str(portrait_path))
    assert code == 2 and "--driven_audio is required" in err
    (tmp_path / "notes.txt").write_text("not a picture")
    code, _, err = run_main(capsys, "--source_image", str(tmp_path / "notes.txt"), "--driven_audio", str(speech_path))
    assert code == 2 and "not a supported image" in err


def test_argparse_rejects_unknown_choices(capsys, portrait_path, speech_path):
    with pytest.raises(SystemExit) as exc:
        inference.main(["--source_image", str(portrait_path), "--driven_audio", str(speech_path),
                        "--enhancer", "RestoreFormer"])
    assert exc.value.code == 2 and "invalid choice: 'RestoreFormer'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inference.main(["--driven_audio", str(speech_path)])
    assert "--source_image" in capsys.readouterr().err


def test_reference_flags_map_as_in_the_original():
    parse = inference.build_parser().parse_args
    base = ["--source_image", "a.png"]
    o, ref, blink = inference.options_from_args(parse(base + ["--ref_pose", "v.mp4", "--ref_eyeblink", "v.mp4"]))
    assert (ref, o.ref_info, blink) == (Path("v.mp4"), "pose+blink", None)
    o, ref, blink = inference.options_from_args(parse(base + ["--ref_pose", "p.mp4", "--ref_eyeblink", "b.mp4"]))
    assert (ref, o.ref_info, blink) == (Path("p.mp4"), "pose", Path("b.mp4"))
    o, ref, blink = inference.options_from_args(parse(base + ["--ref_eyeblink", "b.mp4"]))
    assert (ref, o.ref_info, blink) == (Path("b.mp4"), "blink", None)
    o, _, _ = inference.options_from_args(parse(base + ["--input_yaw", "-10", "10", "--still", "--preprocess", "full",
                                                        "--seed", "5", "--idle_seconds", "2"]))
    assert o.input_yaw == (-10.0, 10.0) and o.still_mode and o.preprocess == "full" and o.seed == 5
    assert o.idle_mode and o.idle_seconds == 2.0 and o.engine == "sadtalker"


def test_a_run_prints_the_video_path(capsys, portrait_path, speech_path, placeholder_checkpoints, monkeypatch,
                                     tmp_path):
    """The whole CLI path with stand-in face/motion stages and a tiny renderer (the real stages have own tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny nets are faster on one thread
    loaded = {}

    def fake_load(settings, size, enhancer, engine="sadtalker"):
        loaded.update(settings=settings, size=size, engine=engine)
        return SadTalkerPipeline(StandInFaceStage(), StandInMotionStage(), {256: tiny_renderer(64)},
                                 torch.device("cpu"))

    monkeypatch.setattr(inference, "load_pipeline", fake_load)
    try:
        code, out, err = run_main(capsys, "--source_image", str(portrait_path), "--idle_seconds", "0.4",
                                  "--checkpoint_dir", str(placeholder_checkpoints),
                                  "--result_dir", str(tmp_path / "res"), "--preprocess", "full", "--cpu",
                                  "--no_fast_paths", "--precision", "bf16")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    video = Path(out.strip())
    assert video.parent == tmp_path / "res" and video.suffix == ".mp4"
    info = probe(video)
    assert (info.num_frames, info.width, info.height) == (10, 512, 512)
    settings = loaded["settings"]
    assert settings.device == "cpu" and settings.locations.checkpoint_dir == placeholder_checkpoints
    assert settings.accel.cpu_kernels is False and settings.precision == "bf16"
    assert "100%" in err  # the tqdm bar reached the end
    assert np.isclose(info.audio_seconds, 0.4, atol=0.05)
