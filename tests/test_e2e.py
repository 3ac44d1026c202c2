"""End to end over real HTTP: the model service and the web front as subprocesses, as a user runs them."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sadtalker.audio import load_audio
from sadtalker.video import probe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll until the service answers (readiness), failing early if the process died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    model_port, front_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "SADTALKER_PORT": str(model_port), "SADTALKER_CHECKPOINTS": str(tmp / "no-checkpoints"),
           "SADTALKER_RESULTS": str(tmp / "results"),
           "FRONT_PORT": str(front_port), "SADTALKER_URL": f"http://127.0.0.1:{model_port}/",
           "DATABASE_URL": f"sqlite:///{tmp / 'front.db'}", "DATA_DIR": str(tmp / "data")}
    procs = []
    try:
        for name, script, url in (
            ("model", "SadTalker/app.py", f"http://127.0.0.1:{model_port}/health"),
            ("front", "DemoFront/app.py", f"http://127.0.0.1:{front_port}/"),
        ):
            log = tmp / f"{name}.log"
            proc = subprocess.Popen([sys.executable, str(ROOT / script)], cwd=ROOT, env=env,
                                    stdout=log.open("w"), stderr=subprocess.STDOUT)
            procs.append(proc)
            wait_for(url, proc, log)
        yield {"model": f"http://127.0.0.1:{model_port}/", "front": f"http://127.0.0.1:{front_port}", "tmp": tmp}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    boundary = "----e2e-boundary-7c1f"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.load(reply)


def check_video(path: Path, audio: Path) -> None:
    info = probe(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac", info
    seconds = len(load_audio(audio)) / 16000
    assert abs(info.num_frames - round(seconds * 25)) <= 1, (info.num_frames, seconds)
    assert abs(info.audio_seconds - seconds) <= 0.1, (info.audio_seconds, seconds)


def test_generate_through_the_front(services, portrait_path, speech_path, tmp_path):
    body, ctype = multipart({"preprocess": "crop", "size": "256", "pose_style": "1"},
                            {"image": portrait_path, "audio": speech_path})
    request = urllib.request.Request(services["front"] + "/api/generate", data=body, method="POST",
                                     headers={"Content-Type": ctype})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 202
        job = json.load(reply)
    status_url = services["front"] + f"/api/jobs/{job['id']}"
    deadline = time.time() + 300
    while True:
        state = get_json(status_url)
        if state["status"] in ("done", "failed") or time.time() > deadline:
            break
        time.sleep(0.5)  # polling interval of a client, not a synchronisation stand-in
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
    check_video(Path(result["video"] if isinstance(result, dict) else result), speech_path)


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
    body, ctype = multipart({}, {"image": no_face_path, "audio": speech_path})
    request = urllib.request.Request(services["front"] + "/api/generate", data=body, method="POST",
                                     headers={"Content-Type": ctype})
    with urllib.request.urlopen(request, timeout=30) as reply:
        job = json.load(reply)
    deadline = time.time() + 120
    while True:
        state = get_json(services["front"] + f"/api/jobs/{job['id']}")
        if state["status"] in ("done", "failed") or time.time() > deadline:
            break
        time.sleep(0.5)  # polling interval of a client
    assert state["status"] == "failed", state
    assert "no face found in the image" in (state.get("error") or ""), state
