"""The Gradio model service over real HTTP, with a small stand-in engine (the engines have their own tests): the
original's positional API, the options JSON, what ran returned beside the video, input and service errors told
apart, out-of-memory handled, and no host file read through the API."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from live_services import free_port, serve_in_thread

from sadtalker.engines.base import GenerationResult
from sadtalker.errors import NoFaceError
from sadtalker.io.audio import load_audio
from sadtalker.io.limits import InputLimits
from sadtalker.io.video import VideoWriter, probe
from sadtalker.service.model_service import ModelService
from sadtalker.service.settings import ServiceSettings
from sadtalker.weights import CheckpointLocations


class ColourEngine:
    """Writes a real H.264/AAC clip of the right length; fails with NoFaceError on a plain image; `fail_with` makes
    the next call raise that exception instead; `gate` (an Event) holds a call until it is set."""

    name = "colour"

    def __init__(self):
        self.calls = []
        self.fail_with: BaseException | None = None
        self.gate: threading.Event | None = None
        self.pace = 0.0  # seconds per frame
        self.frames_written: list[int] = []  # per call, however it ended

    def generate(self, inputs, options, output_path, progress=None):
        self.calls.append(options)
        if self.gate is not None:
            self.gate.wait(30)
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        if inputs.image.std(axis=(0, 1)).max() < 1:
            raise NoFaceError()
        wav = inputs.audio
        frames = round(len(wav) / 16000 * 25)
        written = 0
        try:
            with VideoWriter(output_path, 64, 64, audio=wav) as writer:
                for i in range(frames):
                    writer.write(np.full((64, 64, 3), i % 255, dtype=np.uint8))
                    written += 1
                    time.sleep(self.pace)
                    if progress:
                        progress((i + 1) / frames, "rendering")
        finally:
            self.frames_written.append(written)
        return GenerationResult(Path(output_path), self.name, frames, len(wav) / 16000, 64, 64, {"render": 0.1})


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    from app import create_app

    tmp = tmp_path_factory.mktemp("svc")
    settings = ServiceSettings(port=free_port(), results_dir=tmp / "results", concurrency=2,
                               locations=CheckpointLocations(checkpoint_dir=tmp / "none"),
                               limits=InputLimits(max_audio_seconds=8))
    service = ModelService(settings)
    engine = ColourEngine()
    service.install_engine("landmark", engine)  # the stand-in replaces the landmark engine for these tests
    with serve_in_thread(create_app(service), settings.port) as url:
        yield url, engine


def call(url, image, audio, *args):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return client.predict(handle_file(str(image)), handle_file(str(audio)), *args, api_name="/predict")


def health(url) -> dict:
    with urllib.request.urlopen(url + "health", timeout=10) as reply:
        assert reply.status == 200
        return json.load(reply)


def test_predict_returns_a_playable_mp4_and_what_ran(service_url, portrait_path, speech_path):
    url, engine = service_url
    video, ran = call(url, portrait_path, speech_path, "crop", False, False, 2, 256, 3)
    info = probe(Path(video))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    seconds = len(load_audio(speech_path)) / 16000
    assert abs(info.num_frames - round(seconds * 25)) <= 1
    assert engine.calls[-1].pose_style == 3
    assert ran["engine"] == "colour" and ran["frames"] == info.num_frames and ran["timings"] == {"render": 0.1}


def test_first_two_inputs_alone_use_the_defaults(service_url, portrait_path, speech_path):
    url, engine = service_url
    call(url, portrait_path, speech_path)
    o = engine.calls[-1]
    assert (o.preprocess, o.still_mode, o.enhancer, o.batch_size, o.size, o.pose_style) == ("crop", False, False, 2, 256, 0)


def test_the_options_json_reaches_the_engine_and_overrides_the_eight(service_url, portrait_path, speech_path):
    url, engine = service_url
    options = json.dumps({"seed": 2**63 - 1, "expression_scale": 0.5, "pose_style": 7, "engine": "landmark"})
    call(url, portrait_path, speech_path, "crop", False, False, 2, 256, 3, options)
    o = engine.calls[-1]
    assert (o.seed, o.expression_scale, o.pose_style, o.engine) == (2**63 - 1, 0.5, 7, "landmark")


@pytest.mark.parametrize("args, message", [
    (("crop", False, False, 2, 256, 46), "pose_style must be between 0 and 45"),
    (("crop", False, False, 2, 256, -1), "pose_style must be between 0 and 45"),
    (("crop", False, False, 2, 256, 0, '{"seed": 18446744073709551616}'), "seed must be between 0 and 2\\^63-1"),
    (("crop", False, False, 2, 256, 0, '{"seed": -1}'), "seed must be between 0 and 2\\^63-1"),
    (("crop", False, False, 2, 256, 0, '{"colour": 1}'), "unknown option"),
    (("crop", False, False, 2, 256, 0, "[1]"), "options must be a JSON object"),
])
def test_bad_options_are_input_errors_naming_the_option(service_url, portrait_path, speech_path, args, message):
    url, _ = service_url
    with pytest.raises(Exception, match="Input error: .*" + message):
        call(url, portrait_path, speech_path, *args)


def test_no_face_and_silent_audio_and_too_long_audio(service_url, portrait_path, no_face_path, speech_path,
                                                      silent_path, tmp_path):
    import soundfile

    url, _ = service_url
    with pytest.raises(Exception, match="Input error: no face found in the image"):
        call(url, no_face_path, speech_path)
    with pytest.raises(Exception, match="the audio is silent"):
        call(url, portrait_path, silent_path)
    long_clip = tmp_path / "long.wav"
    soundfile.write(str(long_clip), 0.1 * np.sin(np.arange(16000 * 9) / 10).astype(np.float32), 16000)
    with pytest.raises(Exception, match="the audio is too long"):
        call(url, portrait_path, long_clip)


def test_unreadable_audio_is_named(service_url, portrait_path, tmp_path):
    url, _ = service_url
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(Exception, match="could not read the audio file"):
        call(url, portrait_path, bad)


def test_an_internal_fault_is_a_service_error_and_the_next_request_works(service_url, portrait_path, speech_path):
    url, engine = service_url
    engine.fail_with = RuntimeError("a kernel went wrong")
    with pytest.raises(Exception, match="Service error: .*a kernel went wrong"):
        call(url, portrait_path, speech_path)
    video, _ = call(url, portrait_path, speech_path)
    assert Path(video).is_file()


def test_out_of_memory_names_the_setting_and_the_service_stays_healthy(service_url, portrait_path, speech_path):
    url, engine = service_url
    engine.fail_with = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
    with pytest.raises(Exception, match="Service error: the cpu device ran out of memory at size 512 with batch_size "
                                        "4; try batch_size 2"):
        call(url, portrait_path, speech_path, "crop", False, False, 4, 512, 0)
    assert health(url)["status"] == "ok"
    video, _ = call(url, portrait_path, speech_path)
    assert Path(video).is_file()


def test_batch_size_is_capped_by_the_rule(service_url, portrait_path, speech_path):
    from sadtalker.service.model_service import CPU_MAX_BATCH

    url, engine = service_url
    call(url, portrait_path, speech_path, "crop", False, False, 10, 512, 0)
    assert engine.calls[-1].batch_size == CPU_MAX_BATCH[512]


def test_host_files_are_not_read_through_the_api(service_url, portrait_path, tmp_path):
    """A raw API call naming a file on the host (not uploaded through Gradio) is refused with the same answer
    whether the file exists or not; nothing is rendered."""
    import httpx

    url, engine = service_url
    calls = len(engine.calls)
    host_image = tmp_path / "someone-elses.png"
    host_image.write_bytes(portrait_path.read_bytes())
    answers = []
    for path in (host_image, tmp_path / "missing.png", Path("/usr/share/sounds/none.wav")):
        file_data = {"path": str(path), "meta": {"_type": "gradio.FileData"}}
        with httpx.Client(base_url=url, timeout=30) as client:
            event = client.post("gradio_api/call/predict", json={"data": [file_data, file_data]}).json()["event_id"]
            stream = client.get(f"gradio_api/call/predict/{event}").text
        assert "event: error" in stream, stream
        answers.append(stream.replace(str(path), "PATH"))
    assert answers[0] == answers[1] == answers[2]
    assert len(engine.calls) == calls


def test_health_touches_the_device_and_counts_queued_requests_apart(service_url, portrait_path, speech_path):
    """Two requests at once (concurrency 2) on one engine: one runs, the other waits for its turn and is counted
    as queued, not running."""
    url, engine = service_url
    info = health(url)
    assert info["engine"] == "landmark" and info["device"] == "cpu" and info["busy"] is False
    engine.gate = threading.Event()
    threads = [threading.Thread(target=call, args=(url, portrait_path, speech_path)) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(600):
            info = health(url)
            if info["running"] == 1 and info["queued"] == 1:
                break
            threading.Event().wait(0.05)
        assert (info["running"], info["queued"]) == (1, 1), info
    finally:
        engine.gate.set()
        for t in threads:
            t.join(60)
        engine.gate = None
    assert health(url)["running"] == 0


def test_a_broken_device_makes_health_fail(tmp_path, monkeypatch):
    settings = ServiceSettings(results_dir=tmp_path, locations=CheckpointLocations(checkpoint_dir=tmp_path))
    service = ModelService(settings)
    assert service.health()["status"] == "ok"
    monkeypatch.setattr(torch, "ones", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA error: an illegal "
                                                                                          "memory access")))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        service.health()


def test_a_cancelled_job_stops_at_the_next_progress_report(service_url, portrait_path, speech_path):
    """gradio_client's Job.cancel() on a running job: the handler stops rendering at its next progress report
    (Gradio alone would let the thread run to the end), and the service takes the next request."""
    from gradio_client import Client, handle_file

    url, engine = service_url
    engine.pace = 0.05  # ~97 frames: ~5 s
    try:
        before = len(engine.frames_written)
        job = Client(url, verbose=False).submit(handle_file(str(portrait_path)), handle_file(str(speech_path)),
                                                api_name="/predict")
        deadline = time.monotonic() + 30
        while not (job.status().progress_data and job.status().progress_data[-1].desc == "rendering"):
            assert time.monotonic() < deadline, "the job did not start rendering"
            time.sleep(0.05)
        job.cancel()
        while len(engine.frames_written) == before:
            assert time.monotonic() < deadline, "the render did not stop"
            time.sleep(0.05)
        frames = round(len(load_audio(speech_path)) / 16000 * 25)
        assert engine.frames_written[-1] < frames // 2, (engine.frames_written[-1], frames)
    finally:
        engine.pace = 0.0
    video, ran = call(url, portrait_path, speech_path)  # the service goes on
    assert ran["engine"] == "colour"
