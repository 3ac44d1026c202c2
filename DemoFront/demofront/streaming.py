"""Progressive playback: a job's video received from the model service as it renders, and served as it grows.

Receiving (`receive_stream`, called by the model client with the job folder): the messages of the service's
`predict_stream` endpoint are appended, in order, to `<job folder>/stream.mp4`, a fragmented H.264/AAC MP4 that is
playable from its first fragment; at the end the same streams are remuxed (no re-encoding) into the job's plain
`result.mp4`, and `stream.end` marks the stream as complete (also after a failure, so readers stop).

Serving (`GET /api/jobs/<id>/stream`, `serve_stream`): chunked transfer of `stream.mp4` from its first byte,
following the file as it grows until the end mark (or the job ends some other way); a finished job's stream is
the whole file at once.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sadtalker.io.video import remux_faststart
from sadtalker.service.streaming import StreamChunk  # the message format (numpy and the options only: no torch)

logger = logging.getLogger(__name__)

STREAM_NAME = "stream.mp4"
END_NAME = "stream.end"
READ_BYTES = 1 << 16
POLL_SECONDS = 0.02       # how often a reader looks for new bytes
STATUS_SECONDS = 1.0      # ... and, without new bytes, asks whether the job ended some other way

ProgressFn = Callable[[float, str], None]


class StreamBroken(Exception):
    """The service's messages skipped or repeated bytes (a replica swap mid-stream, a protocol error)."""


def stream_path(job_dir: Path) -> Path:
    return Path(job_dir) / STREAM_NAME


def receive_stream(messages: Iterable[dict[str, Any]], job_dir: Path, output: Path,
                   progress: ProgressFn) -> dict[str, Any]:
    """Append the messages' bytes to the job's stream file as they arrive; when the last one (done) comes,
    remux the file into `output` and return the service's `info`. Raises StreamBroken on a gap."""
    job_dir.mkdir(parents=True, exist_ok=True)
    path, end = stream_path(job_dir), Path(job_dir) / END_NAME
    end.unlink(missing_ok=True)
    seen: set[int] = set()
    written = 0
    info: dict[str, Any] | None = None
    try:
        with open(path, "wb") as out:
            for message in messages:
                chunk = StreamChunk.from_message(message)
                if chunk.seq in seen:  # gradio_client may hand the final message twice
                    continue
                seen.add(chunk.seq)
                if chunk.offset != written:
                    raise StreamBroken(f"the stream jumped from byte {written} to {chunk.offset}")
                if chunk.data:
                    out.write(chunk.data)
                    out.flush()
                    written += len(chunk.data)
                progress(chunk.progress, chunk.stage)
                if chunk.done:
                    info = chunk.info or {}
        if info is None:
            raise StreamBroken("the stream ended before its last message")
        remux_faststart(path, output)
        return info
    finally:
        end.touch()


def serve_stream(job_dir: Path, job_ended: Callable[[], bool], wait_seconds: float) -> Iterator[bytes]:
    """The stream file's bytes from the start, following it while it grows, until its end mark (or `job_ended()`
    says the job finished without one, or nothing arrives for `wait_seconds`)."""
    path, end = stream_path(job_dir), Path(job_dir) / END_NAME
    deadline = time.monotonic() + wait_seconds
    last_status = 0.0
    handle = None
    try:
        while True:
            if handle is None and path.is_file():
                handle = open(path, "rb")
            finished = end.exists()  # looked at before reading: what was written before the mark is read
            data = handle.read(READ_BYTES) if handle is not None else b""
            if data:
                deadline = time.monotonic() + wait_seconds
                yield data
                continue
            if finished:  # complete (or failed before its first byte: no file)
                return
            now = time.monotonic()
            if now > deadline:
                logger.info("stream %s: nothing new for %.0f s; closing", job_dir.name, wait_seconds)
                return
            if now - last_status > STATUS_SECONDS:
                last_status = now
                if job_ended() and not end.exists():
                    return
            time.sleep(POLL_SECONDS)
    finally:
        if handle is not None:
            handle.close()


def stream_is_complete(job_dir: Path) -> bool:
    return (Path(job_dir) / END_NAME).exists() and stream_path(job_dir).is_file()


def first_fragment_written(path: Path) -> bool:
    """Whether the file holds a moov and a complete first moof+mdat (a player can show the first frames)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            data = handle.read(min(size, 8 << 20))
    except OSError:
        return False
    pos, boxes = 0, []
    while pos + 8 <= len(data):
        box_size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if box_size < 8 or pos + box_size > len(data):
            break
        boxes.append(kind)
        pos += box_size
    return b"moov" in boxes and b"mdat" in boxes


# -- the route ---------------------------------------------------------------------------------------------------

def _blueprint():
    from flask import Blueprint, Response, current_app, send_file

    from .api import refuse_if_expired, visible_job
    from .errors import ApiError
    from .models import Job

    bp = Blueprint("stream", __name__, url_prefix="/api")

    @bp.get("/jobs/<job_id>/stream")
    def job_stream(job_id: str) -> Response:
        """The job's video as fragmented MP4 while it renders (chunked, from the first fragment to the end); a
        finished job's whole stream file (or its video, for a job made before streaming)."""
        front = current_app.extensions["demofront"]
        job = visible_job(job_id)
        refuse_if_expired(job, "video")
        job_dir = front.storage.job_dir(job.id)
        if job.status == "failed" and not stream_path(job_dir).is_file():
            raise ApiError(409, f"job {job_id} failed: {job.error}", extra={"job_status": job.status})
        if job.status == "done":
            path = stream_path(job_dir) if stream_is_complete(job_dir) else (
                front.storage.absolute(job.output_path) if job.output_path else None)
            if path is None or not path.is_file():
                raise ApiError(410, f"the video of job {job.id} is no longer stored")
            return send_file(path, mimetype="video/mp4", conditional=True, max_age=0)

        def ended() -> bool:
            with front.db.session() as s:
                row = s.get(Job, job.id)
                return row is None or row.status in ("done", "failed")

        # each growing stream holds one of the server's request threads until its job ends: at most half of them
        slots = current_app.extensions["demofront_stream_slots"]
        if not slots.acquire(blocking=False):
            raise ApiError(503, "too many videos are being streamed right now; try again soon, or wait for the job "
                                "to finish", headers={"Retry-After": "10"})

        body = serve_stream(job_dir, ended, wait_seconds=front.config.model_timeout_seconds)
        response = Response(body, mimetype="video/mp4", direct_passthrough=True)
        response.call_on_close(slots.release)  # the server closes the response at the end or on a disconnect
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must pass the chunks on as they come
        return response

    return bp


def register(app: Any) -> None:
    import threading

    threads = app.extensions["demofront"].config.server_threads
    app.extensions["demofront_stream_slots"] = threading.BoundedSemaphore(max(1, threads // 2))
    app.register_blueprint(_blueprint())
