"""The progressive stream as players and downloaders see it, over real HTTP with both services as subprocesses
(landmark engine): while a job renders, `GET /api/jobs/<id>/stream` saved to a file (what `curl -o` does) is a
valid fragmented H.264/AAC MP4 as long as the speech, and ffmpeg decodes it from the URL without an error (as VLC
and ffplay would play it). Needs Debian's ffmpeg (ffprobe too), which WITH_TEST_TOOLS=1 scripts/setup.sh
installs."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from live_services import post_job, running_product, wait_job

from sadtalker.io.audio import load_audio

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                 reason="needs ffmpeg and ffprobe on PATH (apt-get install ffmpeg; "
                                        "WITH_TEST_TOOLS=1 scripts/setup.sh does it)")]


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    with running_product(tmp_path_factory.mktemp("e2e-stream")) as (_, url):
        yield url


@pytest.fixture(scope="module")
def speech_30s(long_speech_path, tmp_path_factory) -> Path:
    """The long clip (12.5 s) three times: long enough that the job still renders when its stream is asked for."""
    import soundfile

    path = tmp_path_factory.mktemp("clip") / "speech_30s.wav"
    soundfile.write(path, np.tile(load_audio(long_speech_path), 3), 16000, subtype="PCM_16")
    return path


def top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of an MP4's top-level boxes, in order; raises on a box that runs past the end."""
    boxes, pos = [], 0
    while pos < len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        assert size >= 8 and pos + size <= len(data), f"box {kind!r} at {pos} runs past the end of the file"
        boxes.append((kind, pos, size))
        pos += size
    return boxes


def ffprobe(path: Path) -> dict:
    proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name:format=duration",
                           "-of", "json", str(path)], capture_output=True, text=True, check=True)
    assert proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


def decode_from_url(url: str, out: dict) -> None:
    """ffmpeg reads the URL and decodes every frame (framecrc: one line per decoded frame and stream)."""
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", url, "-f", "framecrc", "-"],
                          capture_output=True, text=True, timeout=300)
    out.update(returncode=proc.returncode, stderr=proc.stderr, lines=proc.stdout.splitlines())


def decoded_seconds(framecrc: list[str], stream: int) -> float:
    """Seconds of one stream's decoded frames in ffmpeg's framecrc output (its durations, in its time base)."""
    base = next(line for line in framecrc if line.startswith(f"#tb {stream}:")).split(":")[1].strip()
    num, den = (int(x) for x in base.split("/"))
    durations = [int(line.split(",")[3]) for line in framecrc if line.startswith(f"{stream},")]
    return sum(durations) * num / den


def test_stream_downloads_and_plays_from_the_url_while_the_job_renders(front, portrait_path, speech_30s, tmp_path):
    job = post_job(front, {"size": "256"}, {"image": portrait_path, "audio": speech_30s})
    url = f"{front}/api/jobs/{job['id']}/stream"
    decoded: dict = {}
    player = threading.Thread(target=decode_from_url, args=(url, decoded))
    player.start()
    with urllib.request.urlopen(url, timeout=120) as reply:  # what `curl URL -o out.mp4` does
        live = reply.headers.get("Content-Length") is None and reply.headers.get("Transfer-Encoding") == "chunked"
        first = reply.read(1)
        status_at_first_byte = json.load(urllib.request.urlopen(f"{front}/api/jobs/{job['id']}", timeout=30))["status"]
        body = first + reply.read()
    player.join(300)
    done = wait_job(front, job["id"], timeout=300)
    assert done["status"] == "done", done
    assert live and status_at_first_byte in ("queued", "running"), "served as it grew, while the job rendered"

    seconds = len(load_audio(speech_30s)) / 16000
    saved = tmp_path / "out.mp4"
    saved.write_bytes(body)
    boxes = top_level_boxes(body)
    kinds = [kind for kind, _, _ in boxes]
    assert kinds[:2] == [b"ftyp", b"moov"] and kinds.count(b"moof") >= 2, kinds[:12]
    moov = next(body[at:at + size] for kind, at, size in boxes if kind == b"moov")
    assert b"mvex" in moov, "the moov announces movie fragments"
    info = ffprobe(saved)
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"}, info
    assert abs(float(info["format"]["duration"]) - seconds) < 0.2, (info["format"], seconds)

    assert decoded["returncode"] == 0 and decoded["stderr"] == "", decoded.get("stderr")
    print("stream:", {"bytes": len(body), "moof": kinds.count(b"moof"), "status_at_first_byte": status_at_first_byte,
                      "ffprobe_duration": info["format"]["duration"], "speech_seconds": round(seconds, 3),
                      "decoded_video_s": decoded_seconds(decoded["lines"], 0),
                      "decoded_audio_s": round(decoded_seconds(decoded["lines"], 1), 3)})
    assert abs(decoded_seconds(decoded["lines"], 0) - seconds) < 0.1, "every video frame decoded"
    assert abs(decoded_seconds(decoded["lines"], 1) - seconds) < 0.2, "all the sound decoded"
