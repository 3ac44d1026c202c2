"""The Gradio model service over real HTTP, with a small stand-in engine (the engines have their own tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from live_services import free_port, serve_in_thread

from sadtalker.engines.base import GenerationResult
from sadtalker.errors import NoFaceError
from sadtalker.io.audio import load_audio
from sadtalker.io.video import VideoWriter, probe
from sadtalker.service.model_service import ModelService, ServiceConfig
from sadtalker.weights import CheckpointLocations


class ColourEngine:
    """Writes a real H.264/AAC clip of the right length; fails with NoFaceError on a plain image."""

    name = "colour"

    def __init__(self):
        self.calls = []

    def generate(self, image_path, audio_path, options, output_path, progress=None):
        from sadtalker.io.image import load_image

        self.calls.append(options)
        image = load_image(image_path)
        if image.std(axis=(0, 1)).max() < 1:
            raise NoFaceError()
        wav = load_audio(audio_path)
        frames = round(len(wav) / 16000 * 25)
        with VideoWriter(output_path, 64, 64, audio=wav) as writer:
            for i in range(frames):
                writer.write(np.full((64, 64, 3), i % 255, dtype=np.uint8))
                if progress:
                    progress((i + 1) / frames, "rendering")
        return GenerationResult(Path(output_path), self.name, frames, len(wav) / 16000, 64, 64)


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    from app import create_app

    tmp = tmp_path_factory.mktemp("svc")
    config = ServiceConfig(port=free_port(), results_dir=tmp / "results",
                           locations=CheckpointLocations(checkpoint_dir=tmp / "none"), max_audio_seconds=8)
    service = ModelService(config)
    engine = ColourEngine()
    service._engines["landmark"] = engine  # the stand-in replaces the landmark engine for these tests
    with serve_in_thread(create_app(service), config.port) as url:
        yield url, engine


def call(url, image, audio, *args):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return client.predict(handle_file(str(image)), handle_file(str(audio)), *args, api_name="/predict")


def test_predict_returns_a_playable_mp4(service_url, portrait_path, speech_path):
    url, engine = service_url
    result = call(url, portrait_path, speech_path, "crop", False, False, 2, 256, 3)
    path = Path(result["video"] if isinstance(result, dict) else result)
    info = probe(path)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    seconds = len(load_audio(speech_path)) / 16000
    assert abs(info.num_frames - round(seconds * 25)) <= 1
    assert engine.calls[-1].pose_style == 3


def test_first_two_inputs_alone_use_the_defaults(service_url, portrait_path, speech_path):
    url, engine = service_url
    call(url, portrait_path, speech_path)
    o = engine.calls[-1]
    assert (o.preprocess, o.still_mode, o.enhancer, o.batch_size, o.size, o.pose_style) == ("crop", False, False, 2, 256, 0)


@pytest.mark.parametrize("pose_style", [46, -1])
def test_out_of_range_pose_style_is_a_clear_error(service_url, portrait_path, speech_path, pose_style):
    url, _ = service_url
    with pytest.raises(Exception, match="pose_style must be between 0 and 45"):
        call(url, portrait_path, speech_path, "crop", False, False, 2, 256, pose_style)


def test_no_face_and_silent_audio_and_too_long_audio(service_url, portrait_path, no_face_path, speech_path,
                                                      silent_path, tmp_path):
    import soundfile

    url, _ = service_url
    with pytest.raises(Exception, match="no face found in the image"):
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


def test_health_reports_engine_and_device(service_url):
    import json
    import urllib.request

    url, _ = service_url
    with urllib.request.urlopen(url + "health", timeout=10) as reply:
        info = json.load(reply)
        assert reply.status == 200
    assert info["engine"] == "landmark" and info["device"] in ("cpu", "cuda") and info["busy"] is False
