"""The real ModelClient (gradio_client) against a small Gradio app with the model service's `predict` signature (no
`predict_stream`: the client falls back to `predict`; the streaming path is tested against the real service):
the video comes back, gr.Progress reaches the callback, gr.Error becomes ModelRejectedError with its message,
and a service that is not there becomes ModelUnavailableError naming the URL."""
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
                options=None, progress=gr.Progress()):
        extra = json.loads(options or "{}")
        seen.append((preprocess, still_mode, enhancer, batch_size, size, pose_style, extra.get("engine", "auto"),
                     extra.get("expression_scale", 1.0), extra.get("seed", 0)))
        pixels = np.asarray(Image.open(source_image).convert("RGB").resize((64, 64)))
        if pixels.reshape(-1, 3).std(axis=0).max() < 2:
            raise gr.Error("no face found in the image")
        samples = load_audio(Path(driven_audio))
        frames = round(len(samples) / 16000 * 25)
        for step in range(4):
            progress(step / 4, desc=f"stage {step}")
            time.sleep(0.3)
        output = out_dir / f"{len(seen)}.mp4"
        with VideoWriter(output, 64, 64, audio=samples) as writer:
            for _ in range(frames):
                writer.write(pixels)
        return str(output)

    with gr.Blocks() as demo:
        inputs = [gr.Image(type="filepath"), gr.Audio(type="filepath"), gr.Radio(["crop", "resize", "full"]),
                  gr.Checkbox(), gr.Checkbox(), gr.Number(precision=0), gr.Number(precision=0),
                  gr.Number(precision=0), gr.Textbox()]
        button = gr.Button()
        button.click(predict, inputs=inputs, outputs=[gr.Video()], api_name="predict")
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
    assert stand_in_service["seen"][-1] == ("full", True, False, 2, 512, 12, "landmark", 1.0, 0)
    stages = {s for _, s in reports}
    assert "sent to the model service" in stages and {"stage 1", "stage 2"} & stages, reports
    assert max(f for f, _ in reports) >= 0.25


def test_gradio_error_becomes_a_rejection_with_its_message(stand_in_service, no_face_path, speech_path, tmp_path):
    client = ModelClient(stand_in_service["url"], poll_seconds=0.05)
    with pytest.raises(ModelRejectedError, match="^no face found in the image$"):
        client.generate(no_face_path, speech_path, GenerationOptions(), tmp_path / "out.mp4", lambda f, s: None)
    assert not (tmp_path / "out.mp4").exists()


def test_unreachable_service_names_the_url(portrait_path, speech_path, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/"
    client = ModelClient(url)
    with pytest.raises(ModelUnavailableError, match=f"the model service is unreachable at {url}"):
        client.generate(portrait_path, speech_path, GenerationOptions(), tmp_path / "out.mp4", lambda f, s: None)
