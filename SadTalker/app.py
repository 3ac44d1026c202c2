"""SadTalker model service: a Gradio app whose Generate button is the API endpoint `predict`.

Run `python SadTalker/app.py`; settings come from SADTALKER_* environment variables (see ServiceConfig).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":  # first, before threads and large imports: glibc reads malloc tunables at start-up
    from sadtalker.runtime.malloc_tuning import reexec_with_tunables

    reexec_with_tunables()

import gradio as gr  # noqa: E402

from sadtalker.errors import TalkingHeadError  # noqa: E402
from sadtalker.options import ENGINE_CHOICES, NUM_POSE_STYLES, PREPROCESS_MODES, REF_INFO_CHOICES, GenerationOptions  # noqa: E402
from sadtalker.service.model_service import ModelService, ServiceConfig  # noqa: E402

logger = logging.getLogger("sadtalker.app")


class OptionSlider(gr.Slider):
    """A slider whose range is checked by GenerationOptions, so an API caller gets a message naming the option
    (Gradio's own check says only "Value 46 is greater than maximum value 45")."""

    is_template = True  # rendered by the stock slider front-end

    def preprocess(self, payload: float) -> float:
        return payload


def make_predict(service: ModelService):
    """The Generate handler: the first eight inputs are SadTalker's, in its order; the rest are optional."""

    def predict(source_image: str | None, driven_audio: str | None, preprocess: str = "crop",
                still_mode: bool = False, enhancer: bool = False, batch_size: int = 2, size: int = 256,
                pose_style: int = 0, engine: str = "auto", expression_scale: float = 1.0, seed: int = 0,
                ref_video: str | None = None, ref_info: str = "pose", idle_mode: bool = False,
                idle_seconds: float = 5.0, use_blink: bool = True,
                progress: gr.Progress = gr.Progress()) -> str:
        if not source_image:
            raise gr.Error("source_image is required: upload a portrait")
        try:
            options = GenerationOptions.from_mapping(dict(
                preprocess=preprocess, still_mode=still_mode, enhancer=enhancer, batch_size=batch_size,
                size=size, pose_style=pose_style, engine=engine, expression_scale=expression_scale, seed=seed,
                ref_video=ref_video or "", ref_info=ref_info, idle_mode=idle_mode, idle_seconds=idle_seconds,
                use_blink=use_blink,
            ))
            without_audio = options.idle_mode or (options.ref_video and options.ref_info == "all")
            if not driven_audio and not without_audio:
                raise gr.Error("driven_audio is required: upload a voice clip (or use idle mode)")
            progress(0.0, desc="starting")
            result = service.generate(Path(source_image), Path(driven_audio) if driven_audio else None, options,
                                      progress=lambda fraction, stage: progress(fraction, desc=stage))
        except TalkingHeadError as exc:
            logger.info("request rejected: %s", exc)
            raise gr.Error(str(exc)) from exc
        return str(result.video_path)

    return predict


def build_demo(service: ModelService) -> gr.Blocks:
    with gr.Blocks(title="SadTalker", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# SadTalker\nOne portrait and a voice clip in, a talking-head video out.")
        gr.Markdown(service.engine_note, elem_id="engine-note")
        with gr.Row():
            with gr.Column():
                source_image = gr.Image(label="Source image", type="filepath", sources=["upload"])
                driven_audio = gr.Audio(label="Input audio", type="filepath", sources=["upload", "microphone"])
            with gr.Column():
                preprocess = gr.Radio(list(PREPROCESS_MODES), value="crop", label="preprocess",
                                      info="How to handle the input image")
                still_mode = gr.Checkbox(label="Still mode (less head motion, works with preprocess `full`)")
                enhancer = gr.Checkbox(label="GFPGAN as face enhancer")
                batch_size = OptionSlider(1, 10, value=2, step=1, label="batch size in generation")
                size = gr.Radio([256, 512], value=256, label="face model resolution")
                pose_style = OptionSlider(0, NUM_POSE_STYLES - 1, value=0, step=1, label="Pose style")
                with gr.Accordion("More options", open=False):
                    engine = gr.Radio(list(ENGINE_CHOICES), value="auto", label="engine",
                                      info="auto: SadTalker when its weights are installed; landmark: fast draft")
                    expression_scale = gr.Slider(0.0, 3.0, value=1.0, step=0.1, label="expression scale")
                    seed = gr.Number(value=0, precision=0, label="seed (blinks and pose noise)")
                    ref_video = gr.Video(label="reference video (optional)", sources=["upload"])
                    ref_info = gr.Radio(list(REF_INFO_CHOICES), value="pose", label="reference video drives",
                                        info="all: its motion and sound replace the audio's")
                    idle_mode = gr.Checkbox(label="idle mode (no audio: the face breathes and blinks)")
                    idle_seconds = gr.Slider(1, 60, value=5, step=1, label="idle length (seconds)")
                    use_blink = gr.Checkbox(value=True, label="eye blinks")
                generate = gr.Button("Generate", variant="primary")
            with gr.Column():
                video = gr.Video(label="Generated video")
        generate.click(
            make_predict(service),
            inputs=[source_image, driven_audio, preprocess, still_mode, enhancer, batch_size, size, pose_style,
                    engine, expression_scale, seed, ref_video, ref_info, idle_mode, idle_seconds, use_blink],
            outputs=[video],
            api_name="predict",
            concurrency_limit=service.config.concurrency,
        )
    demo.queue(max_size=service.config.max_queue, default_concurrency_limit=service.config.concurrency)
    return demo


def create_app(service: ModelService):
    """FastAPI app: the Gradio UI/API at `/` and a JSON health route at `/health`."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    api = FastAPI(title="SadTalker model service")

    @api.get("/health")
    def health() -> Any:
        try:
            info = service.health()
        except Exception as exc:  # health must answer, whatever broke
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
        return JSONResponse(info, status_code=200 if info["status"] == "ok" else 503)

    return gr.mount_gradio_app(api, build_demo(service), path="/")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ServiceConfig.from_env()
        service = ModelService(config)
        logger.info(service.engine_note)
        service.warm_up()
    except TalkingHeadError as exc:
        logger.error("%s", exc)
        raise SystemExit(2) from exc
    import uvicorn

    logger.info("model service on http://%s:%d/", config.host, config.port)
    uvicorn.run(create_app(service), host=config.host, port=config.port, log_level="warning")


if __name__ == "__main__":
    main()
