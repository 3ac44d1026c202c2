"""A stand-in model service for the task-queue fault tests: a Gradio app with SadTalker/app.py's `predict` inputs
and outputs (eight original inputs, options JSON, ref_video -> video, what ran) that takes FAKE_SECONDS per job,
reporting progress in FAKE_STEPS steps, and writes a real small mp4. Each call is logged to FAKE_LOG as
`start <seed> <pid>` / `done <seed> <pid>` (the tests give every job its own seed), so a test can count runs.

    python tests/queue/fake_model_service.py PORT"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "SadTalker"))


def main() -> None:
    import gradio as gr
    import numpy as np
    from PIL import Image

    from sadtalker.io.audio import load_audio
    from sadtalker.io.video import VideoWriter

    port = int(sys.argv[1])
    seconds = float(os.environ.get("FAKE_SECONDS", "1"))
    steps = int(os.environ.get("FAKE_STEPS", "5"))
    log = Path(os.environ["FAKE_LOG"])
    out_dir = Path(os.environ.get("FAKE_OUT", "/tmp")) / f"fake-{port}"
    out_dir.mkdir(parents=True, exist_ok=True)

    def note(line: str) -> None:
        with log.open("a") as f:
            f.write(line + "\n")

    def predict(source_image, driven_audio, preprocess="crop", still_mode=False, enhancer=False, batch_size=2,
                size=256, pose_style=0, options=None, ref_video=None, progress=gr.Progress()):
        seed = json.loads(options or "{}").get("seed", 0)
        note(f"start {seed} {os.getpid()}")
        pixels = np.asarray(Image.open(source_image).convert("RGB").resize((64, 64)))
        if pixels.reshape(-1, 3).std(axis=0).max() < 2:
            raise gr.Error("Input error: no face found in the image")
        samples = load_audio(Path(driven_audio))
        for step in range(steps):
            progress(step / steps, desc=f"batch {step + 1} of {steps}")
            time.sleep(seconds / steps)
        output = out_dir / f"{seed}-{time.monotonic_ns()}.mp4"
        with VideoWriter(output, 64, 64, audio=samples) as writer:
            for _ in range(max(1, round(len(samples) / 16000 * 25))):
                writer.write(pixels)
        note(f"done {seed} {os.getpid()}")
        return str(output), {"engine": "fake", "seed": seed}

    with gr.Blocks() as demo:
        inputs = [gr.Image(type="filepath"), gr.Audio(type="filepath"), gr.Textbox(), gr.Checkbox(), gr.Checkbox(),
                  gr.Number(precision=0), gr.Number(precision=0), gr.Number(precision=0), gr.Textbox(), gr.Video()]
        button = gr.Button()
        button.click(predict, inputs=inputs, outputs=[gr.Video(), gr.JSON()], api_name="predict",
                     concurrency_limit=1)
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port, quiet=True,
                                                   allowed_paths=[str(out_dir)])


if __name__ == "__main__":
    main()
