"""End to end over real HTTP: the model service and the web front as subprocesses, as a user runs them."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from live_services import multipart, post_job, running_product, wait_job

from sadtalker.io.audio import load_audio
from sadtalker.io.video import probe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    with running_product(tmp) as (model, front):
        yield {"model": model, "front": front, "tmp": tmp}


def check_video(path: Path, audio: Path) -> None:
    info = probe(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac", info
    seconds = len(load_audio(audio)) / 16000
    assert abs(info.num_frames - round(seconds * 25)) <= 1, (info.num_frames, seconds)
    assert abs(info.audio_seconds - seconds) <= 0.1, (info.audio_seconds, seconds)


def test_generate_through_the_front(services, portrait_path, speech_path, tmp_path):
    job = post_job(services["front"], {"preprocess": "crop", "size": "256", "pose_style": "1"},
                   {"image": portrait_path, "audio": speech_path})
    state = wait_job(services["front"], job["id"], timeout=300)
    assert state["status"] == "done", state
    out = tmp_path / "front.mp4"
    with urllib.request.urlopen(services["front"] + f"/api/jobs/{job['id']}/video", timeout=60) as reply:
        out.write_bytes(reply.read())
    check_video(out, speech_path)


def test_generate_directly_with_gradio_client(services, portrait_path, speech_path):
    from gradio_client import Client, handle_file

    client = Client(services["model"], verbose=False)
    result = client.predict(handle_file(str(portrait_path)), handle_file(str(speech_path)), "crop", False, False, 2,
                            256, 0, api_name="/predict")
    video, ran = result  # predict returns the video and what ran
    assert ran["engine"] == "landmark"
    check_video(Path(video["video"] if isinstance(video, dict) else video), speech_path)


def test_no_face_fails_the_job_with_the_reason(services, no_face_path, speech_path):
    from gradio_client import Client, handle_file

    client = Client(services["model"], verbose=False)
    with pytest.raises(Exception, match="no face found in the image"):
        client.predict(handle_file(str(no_face_path)), handle_file(str(speech_path)), api_name="/predict")


def test_wait_true_returns_the_mp4_itself(services, portrait_path, speech_path, tmp_path):
    """The README's curl line: `?wait=true` blocks and answers with the video."""
    body, ctype = multipart({}, {"image": portrait_path, "audio": speech_path})
    request = urllib.request.Request(services["front"] + "/api/generate?wait=true", data=body, method="POST",
                                     headers={"Content-Type": ctype})
    with urllib.request.urlopen(request, timeout=300) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"] == "video/mp4"
        out = tmp_path / "wait.mp4"
        out.write_bytes(reply.read())
    check_video(out, speech_path)


def test_no_face_through_the_front(services, no_face_path, speech_path):
    """The job fails with the model service's reason, and the front says so in the job's status."""
    job = post_job(services["front"], {}, {"image": no_face_path, "audio": speech_path})
    state = wait_job(services["front"], job["id"])
    assert state["status"] == "failed", state
    assert "no face found in the image" in (state.get("error") or ""), state
