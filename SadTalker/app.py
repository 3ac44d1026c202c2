"""Model service: a Gradio app whose Generate button is the API endpoint `predict`.

Run `python SadTalker/app.py`; settings come from the environment (sadtalker/service/settings.py, README table).

`predict` takes SadTalker's eight inputs in the original's order (source_image, driven_audio, preprocess,
still_mode, enhancer, batch_size, size, pose_style), then optionally `options` (a JSON object of any other
GenerationOptions: engine, seed, expression_scale, ...; it overrides the eight) and `ref_video` (a file). It returns
the video and a JSON object saying what ran (engine, frames, size, timings). Errors start with "Input error:" (the
request cannot work) or "Service error:" (retry later or elsewhere).

`predict_stream` takes the same inputs and streams the video while it renders: a generator whose every message is
a JSON object {seq, offset, data (base64 bytes of a fragmented MP4 from `offset` on), size, progress, stage,
elapsed, done, info}; appended in order, the data are a fragmented H.264/AAC MP4 (a fragment per 0.48 s, one per
frame for the first 4), playable from the first fragment. The last message has done=true and the `info` that `predict` returns.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":  # first, before threads and large imports: glibc reads malloc tunables at start-up
    from sadtalker.runtime.malloc_tuning import reexec_with_tunables
    from sadtalker.service.settings import ServiceSettings

    reexec_with_tunables(ServiceSettings.from_env())

import gradio as gr  # noqa: E402

from sadtalker.errors import CancelledError, InvalidInputError, TalkingHeadError  # noqa: E402
from sadtalker.options import (  # noqa: E402
    ENGINE_CHOICES,
    NUM_POSE_STYLES,
    PREPROCESS_MODES,
    REF_INFO_CHOICES,
    GenerationOptions,
    json_object,
)
from sadtalker.service.model_service import ModelService  # noqa: E402
from sadtalker.service.settings import ServiceSettings  # noqa: E402
from sadtalker.service.preview import PortraitPreview  # noqa: E402
from sadtalker.service.streaming import stream_generation  # noqa: E402

logger = logging.getLogger("sadtalker.app")

INPUT_ERROR = "Input error: "
SERVICE_ERROR = "Service error: "
REFUSED_PATH = "the file was not uploaded to this service"


class OptionSlider(gr.Slider):
    """A slider whose range is checked by GenerationOptions, so an API caller gets a message naming the option
    (Gradio's own check says only "Value 46 is greater than maximum value 45")."""

    is_template = True  # rendered by the stock slider front-end

    def preprocess(self, payload: float) -> float:
        return payload


def uploaded(path: str | None, upload_dir: Path) -> Path | None:
    """`path` if it is a file Gradio itself received (inside its upload folder, after resolving symlinks); any
    other path is refused with one message, whether or not it exists."""
    if not path:
        return None
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(upload_dir.resolve()) or not resolved.is_file():
        raise InvalidInputError(REFUSED_PATH)
    return resolved


def build_options(preprocess: Any, still_mode: Any, enhancer: Any, batch_size: Any, size: Any, pose_style: Any,
                  options_json: str | dict | None) -> GenerationOptions:
    """The eight original inputs, overridden by the optional JSON object of options."""
    base = dict(preprocess=preprocess, still_mode=still_mode, enhancer=enhancer, batch_size=batch_size, size=size,
                pose_style=pose_style)
    extra = options_json if isinstance(options_json, dict) else json_object(options_json)
    return GenerationOptions.from_mapping({**base, **extra})


def event_still_wanted(demo: gr.Blocks) -> bool:
    """False once the caller cancelled the Gradio job running this handler (gradio_client's `Job.cancel()`).
    Gradio cancels the event's task, which frees its slot among the queue's active jobs, but cannot stop a sync
    handler's thread; the handler asks this at each progress report and stops. Reads Gradio internals
    (`LocalContext.event_id`, `Queue.active_jobs`); if they are not there, the answer is True (run to the end)."""
    try:
        from gradio.context import LocalContext

        event_id = LocalContext.event_id.get(None)
        active = demo._queue.active_jobs
    except (ImportError, AttributeError):
        return True
    if event_id is None:  # not run through the queue (e.g. called directly)
        return True
    return any(getattr(event, "_id", None) == event_id for job in list(active) if job for event in job)


@contextlib.contextmanager
def gradio_errors() -> Iterator[None]:
    """Our errors as Gradio's, with the prefix that tells the front whose fault: "Input error:" (final) or
    "Service error:" (worth a retry elsewhere; a cancelled request too)."""
    try:
        yield
    except CancelledError as exc:
        logger.info("generation stopped: %s", exc)
        raise gr.Error(SERVICE_ERROR + str(exc)) from exc
    except InvalidInputError as exc:
        logger.info("request rejected: %s", exc)
        raise gr.Error(INPUT_ERROR + str(exc)) from exc
    except TalkingHeadError as exc:
        logger.warning("request failed: %s", exc)
        raise gr.Error(SERVICE_ERROR + str(exc)) from exc


def read_request(upload_dir: Path, source_image: str | None, driven_audio: str | None, preprocess: str,
                 still_mode: bool, enhancer: bool, batch_size: int, size: int, pose_style: int, options: str | None,
                 ref_video: str | None) -> tuple[Path, Path | None, Path | None, GenerationOptions]:
    """`predict`'s and `predict_stream`'s inputs: the uploaded files (only Gradio's own) and the options."""
    image = uploaded(source_image, upload_dir)
    audio = uploaded(driven_audio, upload_dir)
    reference = uploaded(ref_video, upload_dir)
    if image is None:
        raise InvalidInputError("source_image is required: upload a portrait")
    chosen = build_options(preprocess, still_mode, enhancer, batch_size, size, pose_style, options)
    return image, audio, reference, chosen


def make_predict(service: ModelService, upload_dir: Path, demo: gr.Blocks | None = None):
    """The Generate handler: SadTalker's eight inputs in its order, then the optional options JSON and ref_video."""

    def predict(source_image: str | None, driven_audio: str | None, preprocess: str = "crop",
                still_mode: bool = False, enhancer: bool = False, batch_size: int = 2, size: int = 256,
                pose_style: int = 0, options: str | None = None, ref_video: str | None = None,
                progress: gr.Progress = gr.Progress()) -> tuple[str, dict[str, Any]]:
        with gradio_errors():
            image, audio, reference, chosen = read_request(upload_dir, source_image, driven_audio, preprocess,
                                                           still_mode, enhancer, batch_size, size, pose_style,
                                                           options, ref_video)
            progress(0.0, desc="starting")

            def report(fraction: float, stage: str) -> None:
                if demo is not None and not event_still_wanted(demo):
                    raise CancelledError("the request was cancelled by its caller")
                progress(fraction, desc=stage)

            result = service.generate(image, audio, chosen, ref_video=reference, progress=report)
        return str(result.video_path), result.info()

    return predict


def make_predict_stream(service: ModelService, upload_dir: Path):
    """The streaming twin of `predict`: the same inputs; yields the video's bytes as JSON messages as they are
    written (see the module docstring and sadtalker/service/streaming.py)."""

    def predict_stream(source_image: str | None, driven_audio: str | None, preprocess: str = "crop",
                       still_mode: bool = False, enhancer: bool = False, batch_size: int = 2, size: int = 256,
                       pose_style: int = 0, options: str | None = None, ref_video: str | None = None,
                       progress: gr.Progress = gr.Progress()) -> Iterator[dict[str, Any]]:
        with gradio_errors():
            image, audio, reference, chosen = read_request(upload_dir, source_image, driven_audio, preprocess,
                                                           still_mode, enhancer, batch_size, size, pose_style,
                                                           options, ref_video)
            for chunk in stream_generation(service, image, audio, chosen, ref_video=reference):
                progress(chunk.progress, desc=chunk.stage)
                yield chunk.to_message()

    return predict_stream


def make_preview(previewer: PortraitPreview, upload_dir: Path):
    """`preview`: the face found in a portrait and the framing the preprocess mode and size give, before any
    generation (sadtalker/service/preview.py)."""

    def preview(source_image: str | None, preprocess: str = "crop", size: int = 256) -> dict[str, Any]:
        try:
            image = uploaded(source_image, upload_dir)
            if image is None:
                raise InvalidInputError("source_image is required: upload a portrait")
            return previewer(image, GenerationOptions.from_mapping({"preprocess": preprocess, "size": size}))
        except InvalidInputError as exc:
            raise gr.Error(INPUT_ERROR + str(exc)) from exc
        except TalkingHeadError as exc:
            raise gr.Error(SERVICE_ERROR + str(exc)) from exc

    return preview


def build_demo(service: ModelService) -> gr.Blocks:
    settings = service.settings
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
                    options = gr.Textbox(
                        label="options (JSON)", value="", lines=2,
                        info=("any other option as a JSON object, e.g. {\"engine\": \"ditto\", \"seed\": 7, "
                              f"\"ref_info\": \"pose\"}}; engines: {', '.join(ENGINE_CHOICES)}; ref_info: "
                              f"{', '.join(REF_INFO_CHOICES)}"))
                    ref_video = gr.Video(label="reference video (optional)", sources=["upload"])
                generate = gr.Button("Generate", variant="primary")
            with gr.Column():
                video = gr.Video(label="Generated video")
                info = gr.JSON(label="what ran")
                stream = gr.Button("stream", visible=False)  # API only: predict_stream
                stream_message = gr.JSON(visible=False)
                check = gr.Button("preview", visible=False)  # API only: preview
                framing = gr.JSON(visible=False)
        inputs = [source_image, driven_audio, preprocess, still_mode, enhancer, batch_size, size, pose_style,
                  options, ref_video]
        generate.click(
            make_predict(service, Path(demo.GRADIO_CACHE), demo),
            inputs=inputs,
            outputs=[video, info],
            api_name="predict",
            concurrency_limit=settings.concurrency,
            concurrency_id="generation",
        )
        stream.click(
            make_predict_stream(service, Path(demo.GRADIO_CACHE)),
            inputs=inputs,
            outputs=[stream_message],
            api_name="predict_stream",
            concurrency_limit=settings.concurrency,
            concurrency_id="generation",
            show_progress="hidden",
        )
        check.click(make_preview(PortraitPreview(settings.limits), Path(demo.GRADIO_CACHE)),
                    inputs=[source_image, preprocess, size], outputs=[framing], api_name="preview",
                    concurrency_limit=4, concurrency_id="preview", show_progress="hidden")
    demo.queue(max_size=settings.max_queue, default_concurrency_limit=settings.concurrency)
    return demo


def create_app(service: ModelService):
    """FastAPI app: the Gradio UI/API at `/`, a JSON health route at `/health`, and the live mode's WebSocket at
    `/live/ws` (sadtalker/service/live.py: 16 kHz PCM in, JPEG frames and the voice out at 25 fps, landmark engine)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from sadtalker.service import live

    api = FastAPI(title="SadTalker model service")
    live.install(api, live.LiveHub(service.settings, max_sessions=service.settings.live_sessions))

    @api.get("/health")
    def health() -> Any:
        try:
            info = service.health()
        except Exception as exc:  # health must answer, whatever broke (a GPU in an error state lands here)
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
        return JSONResponse(info, status_code=200 if info["status"] == "ok" else 503)

    demo = build_demo(service)
    app = gr.mount_gradio_app(api, demo, path="/", max_file_size=service.settings.limits.max_upload_bytes)
    # Mounted apps skip Gradio's check that API inputs were uploaded through it (it runs once the Blocks count as
    # launched, as Gradio's own reloader marks them); with it, a FileData path elsewhere on the host is refused.
    demo.has_launched = True
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServiceSettings.from_env()
        service = ModelService(settings)
        logger.info(service.engine_note)
        service.warm_up()
    except TalkingHeadError as exc:
        logger.error("%s", exc)
        raise SystemExit(2) from exc
    import uvicorn

    logger.info("model service on http://%s:%d/", settings.host, settings.port)
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
