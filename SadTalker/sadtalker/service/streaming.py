"""Progressive delivery: a generation's video sent while it renders, as the bytes of a fragmented MP4.

The engine writes a fragmented MP4 (`sadtalker.io.video.VideoWriter` with a `.fmp4` path: an empty moov, then a
fragment per keyframe, the first frames one each, flushed as soon as complete); `stream_generation` runs the
generation in a thread and tails that growing file, handing out each new stretch of bytes with the progress at
that moment. Appended in order, the chunks are the whole file, and a player can start on them from the first
fragment. The Gradio endpoint
`predict_stream` (SadTalker/app.py) sends each chunk as one JSON message (`StreamChunk.to_message`).
"""
from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sadtalker.engines.base import GenerationResult
from sadtalker.io.video import FRAGMENTED_SUFFIX
from sadtalker.options import GenerationOptions

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.01          # how often the growing file is looked at
PROGRESS_ONLY_SECONDS = 0.5  # a message without new bytes (progress only) at most this often
MAX_CHUNK_BYTES = 4 << 20    # one message carries at most this much video


@dataclass(frozen=True)
class StreamChunk:
    """One message of the stream: `data` are the file's bytes from `offset` on (none in a progress-only message);
    the last message has `done` and the generation's `info` (GenerationResult.info())."""

    seq: int
    offset: int
    data: bytes
    progress: float
    stage: str
    elapsed: float
    done: bool = False
    info: dict[str, Any] | None = field(default=None)

    def to_message(self) -> dict[str, Any]:
        return {"seq": self.seq, "offset": self.offset, "data": base64.b64encode(self.data).decode("ascii"),
                "size": len(self.data), "progress": round(self.progress, 4), "stage": self.stage,
                "elapsed": round(self.elapsed, 3), "done": self.done, "info": self.info}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> "StreamChunk":
        return cls(seq=int(message["seq"]), offset=int(message["offset"]),
                   data=base64.b64decode(message.get("data") or ""), progress=float(message.get("progress") or 0),
                   stage=str(message.get("stage") or ""), elapsed=float(message.get("elapsed") or 0),
                   done=bool(message.get("done")), info=message.get("info"))


class _Run:
    """The generation thread's shared state: the latest progress, then the result or the error."""

    def __init__(self) -> None:
        self.progress, self.stage = 0.0, "starting"
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def report(self, fraction: float, stage: str) -> None:
        self.progress, self.stage = float(fraction), stage


def stream_generation(service: Any, image: Path, audio: Path | None, options: GenerationOptions,
                      ref_video: Path | None = None) -> Iterator[StreamChunk]:
    """Run `service.generate` (a ModelService) into a fragmented MP4 and yield its bytes as they are written.

    Raises what the generation raised (TalkingHeadError subclasses), after the bytes written before the failure.
    """
    output = service.settings.results_dir / f"{uuid.uuid4().hex}{FRAGMENTED_SUFFIX}"
    run = _Run()
    started = time.perf_counter()

    def work() -> None:
        try:
            run.result = service.generate(image, audio, options, ref_video=ref_video, progress=run.report,
                                          output=output)
        except BaseException as exc:  # handed to the consumer, which raises it
            run.error = exc
        finally:
            run.finished.set()

    threading.Thread(target=work, name="stream-generation", daemon=True).start()
    seq, offset, last_sent = 0, 0, 0.0
    try:
        with _TailReader(output) as reader:
            while True:
                finished = run.finished.is_set()  # read before the file: bytes written before the end are seen
                data = reader.read(MAX_CHUNK_BYTES)
                now = time.perf_counter()
                if data or (now - last_sent >= PROGRESS_ONLY_SECONDS and not finished):
                    yield StreamChunk(seq=seq, offset=offset, data=data, progress=run.progress, stage=run.stage,
                                      elapsed=now - started)
                    seq, offset, last_sent = seq + 1, offset + len(data), now
                    continue
                if finished:
                    break
                run.finished.wait(POLL_SECONDS)
        if run.error is not None:
            raise run.error
        assert run.result is not None
        yield StreamChunk(seq=seq, offset=offset, data=b"", progress=1.0, stage="done",
                          elapsed=time.perf_counter() - started, done=True, info=run.result.info())
    finally:
        run.finished.wait()  # a consumer that went away still lets the generation end before the file goes
        output.unlink(missing_ok=True)


class _TailReader:
    """Reads a file that another writer is still appending to (it may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def read(self, limit: int) -> bytes:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                return b""
        return self._file.read(limit)

    def __enter__(self) -> "_TailReader":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
