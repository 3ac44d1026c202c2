"""The real ModelClient (gradio_client) against a small Gradio app with the model service's `predict` signature
(eight inputs, options JSON, ref_video -> video, what ran; no `predict_stream`, so the client falls back to
`predict`; the streaming path is tested against the real service): the video comes back, gr.Progress reaches the callback,
"Input error: ..." becomes ModelRejectedError with its message, "Service error: ..." ModelUnavailableError (retried
by the queue), a cancelled() that turns true abandons the job, and a service that is not there becomes
ModelUnavailableError naming the URL."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from live_services import free_port

from demofront.model_client import ModelClient, ModelRejectedError, ModelUnavailableError
from sadtalker.options import GenerationOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stand_in_service(tmp_path_factory):
    """Same inputs and outputs as SadTalker/app.py's predict; writes a real mp4 with the library's VideoWriter."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from PIL import Image

    from sadtalker.io.audio import load_audio
    from sadtalker.io.video import VideoWriter

    out_dir = tmp_path_factory.mktemp("stand-in")
    seen: list[tuple] = []

    def predict(source_image, driven_audio, preprocess, still_mode, enhancer, batch_size, size, pose_style,
                options=None, ref_video=None, progress=gr.Progress()):
        extra = json.loads(options or "{}")
        seen.append((preprocess, still_mode, enhancer, batch_size, size, pose_style, extra["engine"],
                     extra["expression_scale"], extra["seed"], ref_video))
        pixels = np.asarray(Image.open(source_image).convert("RGB").resize((64, 64)))
        if extra["seed"] == 13:
            raise gr.Error("Service error: CUDA out of memory")
        if pixels.reshape(-1, 3).std(axis=0).max() < 2:
            raise gr.Error("Input error: no face found in the image")
        samples = load_audio(Path(driven_audio))
        frames = round(len(samples) / 16000 * 25)
        for step in range(4 if extra["seed"] != 99 else 100):
            progress(step / 4, desc=f"stage {step}")
            time.sleep(0.3)
        output = out_dir / f"{len(seen)}.mp4"
        with VideoWriter(output, 64, 64, audio=samples) as writer:
            for _ in range(frames):
                writer.write(pixels)
        return str(output), {"engine": extra["engine"]}

    with gr.Blocks() as demo:
        inputs = [gr.Image(type="filepath"), gr.Audio(type="filepath"), gr.Radio(["crop", "resize", "full"]),
                  gr.Checkbox(), gr.Checkbox(), gr.Number(precision=0), gr.Number(precision=0),
                  gr.Number(precision=0), gr.Textbox(), gr.Video()]
        button = gr.Button()
        button.click(predict, inputs=inputs, outputs=[gr.Video(), gr.JSON()], api_name="predict")
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        allowed_paths=[str(out_dir)])
    yield {"url": f"http://127.0.0.1:{port}/", "seen": seen}
    demo.close()


def test_video_and_progress_come_back(stand_in_service, portrait_path, speech_path, tmp_path):
    client = ModelClient(stand_in_service["url"], poll_seconds=0.05)
    reports: list[tuple[float, str]] = []
    options = GenerationOptions(preprocess="full", still_mode=True, pose_style=12, size=512, engine="landmark")
    outcome = client.generate(portrait_path, speech_path, options, tmp_path / "out.mp4",
                              lambda f, s: reports.append((f, s)))
    assert (tmp_path / "out.mp4").read_bytes()[4:8] == b"ftyp"
    assert outcome.engine == "landmark"  # asked for explicitly
    assert stand_in_service["seen"][-1] == ("full", True, False, 2, 512, 12, "landmark", 1.0, 0, None)
    stages = {s for _, s in reports}
    assert "sent to the model service" in stages and {"stage 1", "stage 2"} & stages, reports
    assert max(f for f, _ in reports) >= 0.25


def test_gradio_error_becomes_a_rejection_with_its_message(stand_in_service, no_face_path, speech_path, tmp_path):
    client = ModelClient(stand_in_service["url"], poll_seconds=0.05)
    with pytest.raises(ModelRejectedError, match="^no face found in the image$"):
        client.generate(no_face_path, speech_path, GenerationOptions(), tmp_path / "out.mp4", lambda f, s: None)
    assert not (tmp_path / "out.mp4").exists()


def test_service_error_is_worth_a_retry(stand_in_service, portrait_path, speech_path, tmp_path):
    client = ModelClient(stand_in_service["url"], poll_seconds=0.05)
    with pytest.raises(ModelUnavailableError, match="^Service error: CUDA out of memory$"):
        client.generate(portrait_path, speech_path, GenerationOptions(seed=13), tmp_path / "out.mp4",
                        lambda f, s: None)


def test_cancelled_abandons_the_job(stand_in_service, portrait_path, speech_path, tmp_path):
    from demofront.model_client import ModelCancelledError

    client = ModelClient(stand_in_service["url"], poll_seconds=0.05)
    reports: list[str] = []
    started = time.monotonic()
    with pytest.raises(ModelCancelledError):
        client.generate(portrait_path, speech_path, GenerationOptions(seed=99), tmp_path / "out.mp4",
                        lambda f, s: reports.append(s), cancelled=lambda: "stage 1" in reports)
    assert time.monotonic() - started < 20 and not (tmp_path / "out.mp4").exists()


def test_unreachable_service_names_the_url(portrait_path, speech_path, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    client = ModelClient(url)
    with pytest.raises(ModelUnavailableError, match=f"the model service is unreachable at {url}"):
        client.generate(portrait_path, speech_path, GenerationOptions(), tmp_path / "out.mp4", lambda f, s: None)
