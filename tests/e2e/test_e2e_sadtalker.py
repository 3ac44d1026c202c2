"""The model service as a user starts it (`python SadTalker/app.py`), with SadTalker checkpoints in the official
layout (random weights) in its checkpoint folder: it picks the SadTalker engine and answers `predict` over real
HTTP with a valid clip made by the real pipeline (face3d, motion, official-size renderer).

The clip is 3 frames: the official-size renderer costs seconds per frame on a CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import soundfile
from live_services import ROOT, free_port, start, stop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def sadtalker_service(official_checkpoints, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e_sadtalker")
    port = free_port()
    # An empty GFPGAN folder: the session's random-weight RetinaFace (written for the enhancer tests) finds no
    # face, so landmarks come from the shipped face mesh, as on a machine without the facexlib weights.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SADTALKER_PORT": str(port),
           "SADTALKER_CHECKPOINTS": str(official_checkpoints.checkpoint_dir),
           "SADTALKER_GFPGAN_WEIGHTS": str(tmp / "no-gfpgan-weights"), "SADTALKER_RESULTS": str(tmp / "results"),
           "SADTALKER_DEVICE": "cpu"}
    log = tmp / "model.log"
    procs = [start(["SadTalker/app.py"], env, log)]
    try:
        wait_for(f"http://127.0.0.1:{port}/health", procs[0], log, timeout=300)
        yield f"http://127.0.0.1:{port}/", log
    finally:
        stop(procs)


@pytest.fixture(scope="module")
def three_frames(speech_path: Path, tmp_path_factory) -> Path:
    from sadtalker.io.audio import load_audio

    path = tmp_path_factory.mktemp("e2e_sadtalker_audio") / "three_frames.wav"
    soundfile.write(str(path), load_audio(speech_path)[3200:3200 + 3 * 640], 16000)
    return path


def test_service_picks_the_sadtalker_engine(sadtalker_service):
    url, _ = sadtalker_service
    with urllib.request.urlopen(url + "health", timeout=30) as reply:
        health = json.load(reply)
    assert health["engine"] == "sadtalker", health


def test_predict_runs_the_real_pipeline(sadtalker_service, portrait_path, three_frames):
    from gradio_client import Client, handle_file

    from sadtalker.io.video import probe

    url, log = sadtalker_service
    client = Client(url, verbose=False)
    result = client.predict(handle_file(str(portrait_path)), handle_file(str(three_frames)), "crop", False, False, 3,
                            256, 7, api_name="/predict")
    video, ran = result  # the video and what ran
    info = probe(Path(video["video"] if isinstance(video, dict) else video))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.num_frames == 3 and info.width == 256, info
    assert ran["engine"] == "sadtalker" and ran["frames"] == 3
    assert "SadTalker" in log.read_text()


def test_pose_style_46_is_refused_with_the_range(sadtalker_service, portrait_path, three_frames):
    from gradio_client import Client, handle_file

    client = Client(sadtalker_service[0], verbose=False)
    with pytest.raises(Exception, match="0.*45"):
        client.predict(handle_file(str(portrait_path)), handle_file(str(three_frames)), "crop", False, False, 2,
                       256, 46, api_name="/predict")


def test_command_line_runs_the_real_pipeline(official_checkpoints, portrait_path, three_frames, tmp_path):
    """`python SadTalker/inference.py` as in the original's README, on the official-layout checkpoints."""
    from sadtalker.io.video import probe

    env = {**os.environ, "SADTALKER_GFPGAN_WEIGHTS": str(tmp_path / "no-gfpgan-weights")}
    run = subprocess.run([sys.executable, str(ROOT / "SadTalker" / "inference.py"), "--source_image", str(portrait_path),
                          "--driven_audio", str(three_frames), "--checkpoint_dir", str(official_checkpoints.checkpoint_dir),
                          "--result_dir", str(tmp_path / "results"), "--preprocess", "extcrop", "--batch_size", "3",
                          "--pose_style", "12", "--cpu"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    video = Path(run.stdout.strip().splitlines()[-1])
    assert video.is_file() and video.parent == tmp_path / "results"
    info = probe(video)
    assert (info.video_codec, info.audio_codec, info.num_frames, info.width) == ("h264", "aac", 3, 256), info
