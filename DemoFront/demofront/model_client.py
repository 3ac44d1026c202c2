"""The one place a worker talks to the model service (through gradio_client): one call per job,
`ModelClient.generate`.

The video comes as it renders (`predict_stream`, received by `streaming.receive_stream` into the job folder, so
the job's page plays it while it grows); a service without that endpoint is asked with `predict` and the file is
copied at the end. Tests swap in any object with the same `generate` method.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from sadtalker.options import GenerationOptions

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


class ModelError(Exception):
    """A generation did not produce a video; `kind` says whose fault: 'input' (the model refused the inputs with
    "Input error: ...": final) or 'service' (unreachable, crashed, timed out, "Service error: ..." or any other
    error: worth a retry)."""

    kind = "service"


class ModelCancelledError(ModelError):
    """`cancelled()` said stop: the job was abandoned on the model service."""

    kind = "cancelled"


class ModelUnavailableError(ModelError):
    kind = "service"


class ModelRejectedError(ModelError):
    kind = "input"


@dataclass(frozen=True)
class ModelOutcome:
    engine: str | None


STREAM_POLL_SECONDS = 0.02  # how often a stream's new fragments are looked for (adds at most this to the latency)
INPUT_ERROR = "Input error:"  # the model service's two kinds of gr.Error (SadTalker/app.py)
SERVICE_ERROR = "Service error:"


class ModelClientProtocol(Protocol):
    url: str

    def generate(self, image: Path, audio: Path, options: GenerationOptions, output: Path,
                 progress: ProgressFn, cancelled: Callable[[], bool] | None = None) -> ModelOutcome: ...


def predict_arguments(image: Any, audio: Any, options: GenerationOptions) -> tuple[Any, ...]:
    """`predict`'s positional inputs: SadTalker's eight, then the other options as one JSON object, no ref_video."""
    values = options.to_dict()
    first = ("preprocess", "still_mode", "enhancer", "batch_size", "size", "pose_style")
    rest = {k: v for k, v in values.items() if k not in first}
    return (image, audio, *(values[k] for k in first), json.dumps(rest, sort_keys=True), None)


class ModelClient:
    """gradio_client against the model service; one Client is made on first use and kept."""

    def __init__(self, url: str, timeout: float = 3600.0, poll_seconds: float = 0.25) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self._client: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                from gradio_client import Client

                try:
                    self._client = Client(self.url, verbose=False, analytics_enabled=False,
                                          httpx_kwargs={"timeout": 30})
                except Exception as exc:  # httpx errors, JSON errors, gradio's own: all mean "not there"
                    raise ModelUnavailableError(f"the model service is unreachable at {self.url} ({_short(exc)})") from exc
            return self._client

    def _forget(self) -> None:
        with self._lock:
            self._client = None

    def engine_in_use(self, requested: str) -> str | None:
        """The engine the service runs for `requested` ('auto' resolves through its /health)."""
        if requested != "auto":
            return requested
        try:
            with urllib.request.urlopen(self.url + "health", timeout=5) as reply:
                return json.load(reply).get("engine")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def preview(self, image: Path, options: GenerationOptions) -> dict[str, Any]:
        """The face and the framing the service finds in a portrait (its `preview` endpoint), without generating.
        Raises ModelRejectedError (no face, unreadable) or ModelUnavailableError."""
        from gradio_client import handle_file
        from gradio_client.exceptions import AppError

        client = self._connect()
        try:
            return client.predict(handle_file(str(image)), options.preprocess.value, options.size,
                                  api_name="/preview")
        except AppError as exc:
            raise _app_error(exc) from exc
        except Exception as exc:
            self._forget()
            raise ModelUnavailableError(f"the model service at {self.url} could not preview ({_short(exc)})") from exc

    def generate(self, image: Path, audio: Path, options: GenerationOptions, output: Path,
                 progress: ProgressFn, cancelled: Callable[[], bool] | None = None) -> ModelOutcome:
        """Run one job on the service; `cancelled()` is asked at every progress message or poll and, once true, the
        gradio_client job is cancelled and ModelCancelledError raised."""
        from gradio_client import handle_file

        client = self._connect()
        progress(0.0, "sent to the model service")
        arguments = predict_arguments(handle_file(str(image)), handle_file(str(audio)), options)
        try:
            job = client.submit(*arguments, api_name="/predict_stream")
        except ValueError:  # a service without the streaming endpoint (gradio_client: "Cannot find a function")
            return self._generate_whole(client, arguments, options, output, progress, cancelled)
        except Exception as exc:
            self._forget()
            raise ModelUnavailableError(f"the model service is unreachable at {self.url} ({_short(exc)})") from exc
        return self._receive(job, output, progress, cancelled)

    def _receive(self, job: Any, output: Path, progress: ProgressFn,
                 cancelled: Callable[[], bool] | None) -> ModelOutcome:
        """Follow a predict_stream job into the job folder (streaming.receive_stream), within the timeout."""
        from gradio_client.exceptions import AppError

        from .streaming import StreamBroken, receive_stream

        deadline = time.monotonic() + self.timeout

        def messages():
            # Polled rather than `for message in job`: gradio_client's iterator waits forever when the connection
            # dies mid-stream (a killed model service), while the job's future does end, with the error.
            seen = 0
            while True:
                finished = job.done()
                outputs = job.outputs()
                while seen < len(outputs):
                    seen += 1
                    yield outputs[seen - 1]
                if finished:
                    job.result(timeout=0)  # raises the service's error or the lost connection
                    return
                self._stop_if_asked(job, cancelled, deadline)
                time.sleep(STREAM_POLL_SECONDS)

        try:
            info = receive_stream(messages(), output.parent, output, progress)
        except AppError as exc:
            raise _app_error(exc) from exc
        except ModelError:
            raise
        except StreamBroken as exc:
            raise ModelUnavailableError(f"the model service at {self.url} sent a broken stream ({exc})") from exc
        except Exception as exc:
            self._forget()
            raise ModelUnavailableError(f"the model service at {self.url} failed or went away during the "
                                        f"generation ({_short(exc)})") from exc
        return ModelOutcome(engine=info.get("engine") or None)

    def _generate_whole(self, client: Any, arguments: tuple[Any, ...], options: GenerationOptions, output: Path,
                        progress: ProgressFn, cancelled: Callable[[], bool] | None) -> ModelOutcome:
        """`predict`: the finished file at the end (a service from before `predict_stream`)."""
        from gradio_client.exceptions import AppError

        try:
            job = client.submit(*arguments, api_name="/predict")
        except Exception as exc:
            self._forget()
            raise ModelUnavailableError(f"the model service is unreachable at {self.url} ({_short(exc)})") from exc
        deadline = time.monotonic() + self.timeout
        while not job.done():
            self._stop_if_asked(job, cancelled, deadline)
            self._report(job, progress)
            time.sleep(self.poll_seconds)
        try:
            result = job.result(timeout=0)
        except AppError as exc:
            raise _app_error(exc) from exc
        except Exception as exc:
            self._forget()
            raise ModelUnavailableError(f"the model service at {self.url} failed or went away during the "
                                        f"generation ({_short(exc)})") from exc
        if isinstance(result, (list, tuple)):  # (video, what ran)
            result = result[0]
        path = Path(result["video"] if isinstance(result, dict) else result)
        if not path.is_file():
            raise ModelUnavailableError(f"the model service at {self.url} returned no video file")
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, output)
        try:
            path.unlink()
        except OSError:
            pass
        return ModelOutcome(engine=self.engine_in_use(options.engine))

    def _stop_if_asked(self, job: Any, cancelled: Callable[[], bool] | None, deadline: float) -> None:
        """Abandon the service's job when `cancelled()` says so or the timeout has passed."""
        if cancelled is not None and cancelled():
            job.cancel()
            raise ModelCancelledError("cancelled")
        if time.monotonic() > deadline:
            job.cancel()
            raise ModelUnavailableError(f"the model service at {self.url} did not finish within {self.timeout:g} s")

    @staticmethod
    def _report(job: Any, progress: ProgressFn) -> None:
        try:
            status = job.status()
        except Exception:  # status is best effort; the result decides
            return
        code = getattr(status.code, "name", str(status.code))
        if status.progress_data:
            unit = status.progress_data[-1]
            fraction = unit.progress
            if fraction is None and unit.index is not None and unit.length:
                fraction = unit.index / unit.length
            progress(float(fraction or 0.0), unit.desc or "generating")
        elif code == "IN_QUEUE":
            rank = status.rank
            progress(0.0, f"waiting in the model service's queue (position {rank + 1})" if rank is not None
                     else "waiting in the model service's queue")
        elif code in ("PROCESSING", "ITERATING"):
            progress(0.0, "generating")


def _app_error(exc: BaseException) -> ModelError:
    """The model service's gr.Error as ours: "Input error: ..." is final; "Service error: ..." or anything
    unexpected (e.g. Gradio lost an uploaded file) is worth a retry."""
    message = str(getattr(exc, "message", None) or exc)
    if message.startswith(INPUT_ERROR):
        return ModelRejectedError(message.removeprefix(INPUT_ERROR).strip())
    return ModelUnavailableError(message)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
