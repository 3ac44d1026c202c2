"""The Gradio `predict` endpoint driving the SadTalker pipeline (stand-in face/motion stages, tiny renderer):
the first eight inputs alone keep working, the extra options arrive, idle and reference-video modes need no audio,
and the pipeline's progress reaches the Gradio job."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from live_services import free_port, serve_in_thread
from pipeline_doubles import StandInFaceStage, StandInMotionStage
from renderer_factory import tiny_renderer

from sadtalker.engines.sadtalker.pipeline import SadTalkerPipeline
from sadtalker.io.limits import InputLimits
from sadtalker.io.video import VideoWriter, probe
from sadtalker.service.model_service import ModelService
from sadtalker.service.settings import ServiceSettings
from sadtalker.weights import CheckpointLocations


class RecordingPipeline(SadTalkerPipeline):
    def __init__(self) -> None:
        super().__init__(StandInFaceStage(), StandInMotionStage(), {256: tiny_renderer(64)}, torch.device("cpu"))
        self.options = []
        self.inputs = []
        self.progress: list[tuple[float, str]] = []

    def generate(self, inputs, options, output_path, progress=None):
        self.options.append(options)
        self.inputs.append(inputs)

        def report(fraction: float, stage: str) -> None:
            self.progress.append((fraction, stage))
            if progress is not None:
                progress(fraction, stage)
                time.sleep(0.05)  # let the client see the intermediate updates

        return super().generate(inputs, options, output_path, report)


@pytest.fixture(scope="module")
def sadtalker_service(tmp_path_factory):
    from app import create_app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("svc_sadtalker")
    settings = ServiceSettings(port=free_port(), results_dir=tmp / "results",
                               locations=CheckpointLocations(checkpoint_dir=tmp / "none"),
                               limits=InputLimits(max_audio_seconds=8))
    service = ModelService(settings)
    pipeline = RecordingPipeline()
    service.install_engine("sadtalker", pipeline, default=True)  # as if the checkpoints were present
    with serve_in_thread(create_app(service), settings.port) as url:
        yield url, pipeline
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    import soundfile

    path = tmp_path_factory.mktemp("svc_audio") / "tone.wav"
    t = np.arange(int(0.6 * 16000)) / 16000
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 200 * t) * np.sin(np.pi * t * 4)).astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def ref_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("svc_ref") / "ref.mp4"
    t = np.arange(int(0.4 * 16000)) / 16000
    with VideoWriter(path, 64, 64, audio=(0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)) as writer:
        for i in range(10):
            writer.write(np.full((64, 64, 3), 60 + 10 * i, np.uint8))
    return path


def video_path(result) -> Path:
    video, _ = result
    return Path(video["video"] if isinstance(video, dict) else video)


def test_eight_inputs_and_progress(sadtalker_service, portrait_path, short_clip):
    from gradio_client import Client, handle_file

    url, pipeline = sadtalker_service
    client = Client(url, verbose=False)
    job = client.submit(handle_file(str(portrait_path)), handle_file(str(short_clip)), "full", True, False, 3, 256, 4,
                        api_name="/predict")
    seen = []
    while not job.done():
        status = job.status()
        if status.progress_data:
            seen.extend((p.progress, p.desc) for p in status.progress_data if p.desc)
        time.sleep(0.02)
    info = probe(video_path(job.result()))
    assert info.num_frames == 15 and (info.width, info.height) == (512, 512)
    o = pipeline.options[-1]
    assert (o.preprocess, o.still_mode, o.batch_size, o.pose_style, o.expression_scale, o.idle_mode) == (
        "full", True, 3, 4, 1.0, False)
    stages = [stage for _, stage in pipeline.progress]
    assert "predicting motion" in stages and any(s.startswith("rendering frame") for s in stages)
    assert any(desc and desc.startswith("rendering frame") for _, desc in seen), seen  # it reached the client


def test_extra_options_and_idle_mode_without_audio(sadtalker_service, portrait_path):
    from gradio_client import Client, handle_file

    url, pipeline = sadtalker_service
    result = Client(url, verbose=False).predict(
        handle_file(str(portrait_path)), None, "crop", False, False, 2, 256, 0,
        '{"expression_scale": 0.5, "seed": 3, "idle_mode": true, "idle_seconds": 1, "use_blink": false}',
        api_name="/predict")
    info = probe(video_path(result))
    assert info.num_frames == 25 and info.audio_seconds == pytest.approx(1.0, abs=0.05)
    o = pipeline.options[-1]
    assert (o.idle_mode, o.idle_seconds, o.use_blink, o.expression_scale, o.seed) == (True, 1.0, False, 0.5, 3)


def test_reference_video_all_mode(sadtalker_service, portrait_path, ref_clip):
    from gradio_client import Client, handle_file

    url, pipeline = sadtalker_service
    result = Client(url, verbose=False).predict(
        handle_file(str(portrait_path)), None, "crop", False, False, 2, 256, 0, '{"ref_info": "all"}',
        handle_file(str(ref_clip)), api_name="/predict")
    info = probe(video_path(result))
    assert info.num_frames == 10 and info.audio_seconds == pytest.approx(0.4, abs=0.05)
    assert pipeline.options[-1].ref_info == "all" and pipeline.inputs[-1].ref_video is not None


def test_missing_audio_is_a_clear_error(sadtalker_service, portrait_path):
    from gradio_client import Client, handle_file

    url, _ = sadtalker_service
    with pytest.raises(Exception, match="driven_audio is required"):
        Client(url, verbose=False).predict(handle_file(str(portrait_path)), None, api_name="/predict")
    with pytest.raises(Exception, match="idle_seconds is too long"):
        Client(url, verbose=False).predict(
            handle_file(str(portrait_path)), None, "crop", False, False, 2, 256, 0,
            '{"idle_mode": true, "idle_seconds": 20}', api_name="/predict")
