"""The live WebSocket over real HTTP (uvicorn, wsproto) with the landmark engine: the start handshake, frames at a
steady 25 fps with or without sound, a mouth that opens with speech and stays shut in silence, blinks going on
while silent, the voice sent back sample for sample with the frame it belongs to, errors for a portrait without a
face and for a full service."""
from __future__ import annotations

import base64
import json
import struct
import threading
import time

import numpy as np
import pytest
from live_services import free_port, serve_in_thread

from sadtalker.io.audio import load_audio
from sadtalker.io.limits import InputLimits
from sadtalker.service.live import split_frame
from sadtalker.service.model_service import ModelService
from sadtalker.service.settings import ServiceSettings
from sadtalker.weights import CheckpointLocations

simple_websocket = pytest.importorskip("simple_websocket")


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    from app import create_app

    tmp = tmp_path_factory.mktemp("live")
    settings = ServiceSettings(port=free_port(), results_dir=tmp / "results", live_sessions=2,
                               locations=CheckpointLocations(checkpoint_dir=tmp / "none"), limits=InputLimits())
    with serve_in_thread(create_app(ModelService(settings)), settings.port) as url:
        yield url.replace("http://", "ws://") + "live/ws"


def start(url, image_path, client=simple_websocket.Client, **options):
    ws = client.connect(url)
    ws.send(json.dumps({"type": "start", "image": base64.b64encode(image_path.read_bytes()).decode(), **options}))
    return ws, json.loads(ws.receive(timeout=30))


def close(ws) -> None:
    if ws.connected:
        ws.close()


def wait_until_idle(live_url: str, timeout: float = 10.0) -> None:
    """Until the service has let go of every session (a closed session's frame loop ends a frame later)."""
    import urllib.request

    health = live_url.replace("ws://", "http://").replace("/live/ws", "/live/health")
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(health, timeout=5) as reply:
            if json.load(reply)["active"] == 0:
                return
        assert time.monotonic() < deadline, "the live sessions were not released"
        time.sleep(0.05)  # polling interval


def test_frames_follow_the_voice_at_25_fps(live_url, portrait_path, long_speech_path):
    ws, ready = start(live_url, portrait_path, size=256)
    try:
        assert ready["type"] == "ready" and (ready["width"], ready["height"], ready["fps"]) == (256, 256, 25)
        pcm = (np.clip(load_audio(long_speech_path)[: 16000 * 4], -1, 1) * 32767).astype("<i2").tobytes()
        silence = bytes(len(pcm) // 2)

        def feed():  # 4 s of speech, then 2 s of silence, at real-time pace in 20 ms chunks
            t0 = time.monotonic()
            for i, offset in enumerate(range(0, len(pcm) + len(silence) // 2, 640)):
                body = (pcm + silence)[offset:offset + 640]
                ws.send(body)
                time.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))

        threading.Thread(target=feed, daemon=True).start()
        frames, arrivals = [], []
        deadline = time.monotonic() + 7.0
        while time.monotonic() < deadline:
            message = ws.receive(timeout=2)
            if isinstance(message, (bytes, bytearray)):
                fields, _, jpeg = split_frame(message)
                frames.append(fields)
                arrivals.append(time.monotonic())
                assert jpeg[:2] == b"\xff\xd8"  # a JPEG
    finally:
        ws.close()
    indices = [f[0] for f in frames]
    span = arrivals[-1] - arrivals[0]
    assert len(frames) / span == pytest.approx(25, rel=0.08), (len(frames), span)
    assert indices == sorted(indices) and indices[-1] - indices[0] + 1 - len(indices) <= 3, "hardly any dropped"
    speaking = [f[2] for f in frames if 0.5 * 16000 < f[1] < 4 * 16000]
    silent = [f[2] for f in frames if f[1] > 4.6 * 16000]
    assert max(speaking) > 0.3 and np.mean(speaking) > 0.1
    assert silent and max(silent) < 0.05, "the mouth shuts in silence"


def test_the_voice_comes_back_with_its_frames(live_url, portrait_path, long_speech_path):
    """Each frame carries the sound received since the previous one, ending at the frame's audio position (where
    the 40 ms its picture shows end): put end to end, the frames' voice is the sent sound, sample for sample."""
    ws, ready = start(live_url, portrait_path, size=256, voice=True)
    assert (ready["protocol"], ready["voice"]) == (2, True)
    pcm = (np.clip(load_audio(long_speech_path)[: 16000 * 3], -1, 1) * 32767).astype("<i2").tobytes()
    chunk = 333 * 2  # 20.8 ms: blocks and frames never line up

    def feed():  # at real-time pace
        t0 = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), chunk)):
            ws.send(pcm[offset:offset + chunk])
            time.sleep(max(0.0, t0 + (i + 1) * chunk / 32000 - time.monotonic()))

    feeder = threading.Thread(target=feed, daemon=True)
    frames = []
    try:
        feeder.start()
        deadline = time.monotonic() + 10.0
        while not frames or frames[-1][0][1] < len(pcm) // 2:  # until a frame has all the sound
            assert time.monotonic() < deadline, (len(frames), frames[-1][0] if frames else None)
            message = ws.receive(timeout=2)
            if isinstance(message, (bytes, bytearray)):
                frames.append(split_frame(message))
    finally:
        ws.close()
    voice = b""
    for (index, position, _, _, size), pcm_part, jpeg in frames:
        assert size == len(pcm_part) and jpeg[:2] == b"\xff\xd8", index
        voice += pcm_part
        assert len(voice) == 2 * position, f"frame {index}: its voice ends at its audio position"
    assert voice == pcm, "the voice sent back is the sound sent, every sample once, in order"
    talking = [len(p) // 2 for f, p, _ in frames if 0 < f[1] < len(pcm) // 2]
    assert abs(np.mean(talking) - 640) < 60, "40 ms of voice per frame on average"


def test_blinks_go_on_in_silence_and_no_face_is_refused(live_url, portrait_path, no_face_path):
    ws, ready = start(live_url, portrait_path, size=256, seed=3, voice=False)
    assert (ready["protocol"], ready["voice"]) == (2, False)
    blinks = []
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # no sound at all
            message = ws.receive(timeout=2)
            if isinstance(message, (bytes, bytearray)):
                if len(blinks) == 10:
                    ws.send(bytes(640))  # some silence: with the voice off, none comes back
                fields, pcm_part, jpeg = split_frame(message)
                assert fields[4] == 0 and pcm_part == b"" and jpeg[:2] == b"\xff\xd8"
                blinks.append(fields[3])
    finally:
        ws.close()
    assert len(blinks) > 110 and max(blinks) > 0.9, "at least one blink in 5 s of silence"
    ws, answer = start(live_url, portrait_path, voice="yes")
    assert answer == {"type": "error", "error": "start: 'voice' must be true or false, not 'yes'"}
    ws, answer = start(live_url, no_face_path)
    assert answer == {"type": "error", "error": "no face found in the image"}
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        ws.receive(timeout=10)
    assert closed.value.reason == 4400 and "no face" in closed.value.message


class LateReader(simple_websocket.Client):
    """A client busy elsewhere when the server answers the upgrade: its first read comes 0.3 s late, so whatever
    the server sent right behind the 101 response lands in the handshake's read (a loaded machine does this by
    chance; simple-websocket leaves such frames unparsed until more bytes come)."""

    def handshake(self):
        real = self.sock

        class Late:
            def __getattr__(self, name):
                return getattr(real, name)

            def recv(self, size):
                time.sleep(0.3)
                return real.recv(size)

        self.sock = Late()
        try:
            super().handshake()
        finally:
            self.sock = real


@pytest.mark.parametrize("client", [simple_websocket.Client, LateReader], ids=["client", "late-reader"])
def test_a_full_service_says_so(live_url, portrait_path, client):
    wait_until_idle(live_url)
    held = [start(live_url, portrait_path, size=256) for _ in range(2)]
    assert [answer["type"] for _, answer in held] == ["ready", "ready"], held
    held = [ws for ws, _ in held]
    try:
        t0 = time.monotonic()
        ws, answer = start(live_url, portrait_path, client=client)  # refused in answer to the start message
        assert answer["type"] == "error" and "in use" in answer["error"]
        with pytest.raises(simple_websocket.ConnectionClosed) as closed:  # then the server closes
            ws.receive(timeout=10)
        assert closed.value.reason == 1013 and "in use" in (closed.value.message or ""), closed.value
        assert time.monotonic() - t0 < 5, "refused at once, not after the server's 10 s close timeout"
    finally:
        for ws in held:
            close(ws)
