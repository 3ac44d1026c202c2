"""Making a job from a request (checks, storage, rate limit, row) and reading jobs back for one viewer."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

from .errors import ApiError
from .models import Job, User, utcnow
from .validation import check_audio_file, check_image, parse_options

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    user: User | None
    client_addr: str | None
    user_agent: str | None


QUEUE_RETRY_AFTER_SECONDS = 30  # what a refused client is told to wait when a queue bound is reached


class JobFactory:
    """Turns a multipart request into a stored, queued job, or an ApiError naming the field at fault.

    Order: options (every number's range) -> queue bounds -> inputs checked in a private scratch folder -> the
    row inserted and the folder moved into place in one transaction, so a job's files and its row appear together
    or not at all. Requests per minute are limited before this (rate_limits.py)."""

    def __init__(self, front: Any) -> None:  # front: demofront.Front (avoids an import cycle)
        self.front = front
        self._queue_lock = threading.Lock()
        self._pending: dict[str, int] = {}  # requests being checked now, per account ("" = all)

    # -- queue bounds ------------------------------------------------------------------------------------------

    @staticmethod
    def _account(who: Requester) -> tuple[str, Any]:
        return ("user", who.user.id) if who.user else ("addr", who.client_addr)

    def _reserve(self, who: Requester) -> str:
        """Count this request against the queue bounds: unfinished jobs (queued or running) plus requests being
        checked right now, per account (or client address) and overall. 429 / 503 with Retry-After when full."""
        config = self.front.config
        kind, value = self._account(who)
        key = f"{kind}:{value}"
        column = Job.owner_id if kind == "user" else Job.client_addr
        unfinished = Job.status.in_(("queued", "running"))
        retry = {"Retry-After": str(QUEUE_RETRY_AFTER_SECONDS)}
        with self._queue_lock:
            with self.front.db.session() as s:
                mine = s.scalar(select(func.count(Job.id)).where(unfinished, column == value)) or 0
                everyone = s.scalar(select(func.count(Job.id)).where(unfinished)) or 0
            if config.max_queued_per_account and mine + self._pending.get(key, 0) >= config.max_queued_per_account:
                raise ApiError(429, f"you have {config.max_queued_per_account} generations queued or running (the "
                                    "limit per account); wait for one to finish", headers=retry)
            if config.max_queued_jobs and everyone + self._pending.get("", 0) >= config.max_queued_jobs:
                raise ApiError(503, f"the queue is full ({config.max_queued_jobs} generations waiting or running); "
                                    f"try again in {QUEUE_RETRY_AFTER_SECONDS} s", headers=retry)
            for k in (key, ""):
                self._pending[k] = self._pending.get(k, 0) + 1
        return key

    def _release(self, key: str) -> None:
        with self._queue_lock:
            for k in (key, ""):
                self._pending[k] -= 1
                if self._pending[k] <= 0:
                    del self._pending[k]

    # -- creation ----------------------------------------------------------------------------------------------

    def create(self, form: Mapping[str, str], files: Mapping[str, FileStorage], who: Requester,
               reuse_inputs_of: Job | None = None) -> Job:
        storage = self.front.storage
        options = parse_options(form.to_dict() if hasattr(form, "to_dict") else dict(form))
        if reuse_inputs_of is not None and reuse_inputs_of.expired_at is not None:
            raise ApiError(410, f"the inputs of job {reuse_inputs_of.id} have expired")
        key = self._reserve(who)
        job_id = uuid.uuid4().hex
        scratch = storage.incoming(job_id)
        try:
            fields: dict[str, Any] = {}
            if reuse_inputs_of is not None:
                fields.update(self._copy_inputs(reuse_inputs_of, scratch))
            else:
                fields.update(self._take_image(files.get("image"), scratch))
                fields.update(self._take_audio(files.get("audio"), form, scratch))
            final = storage.job_dir(job_id)
            for name in ("image_path", "audio_path"):
                fields[name] = storage.relative(final / Path(fields[name]).name)
            job = Job(id=job_id, owner_id=who.user.id if who.user else None, status="queued", progress=0.0,
                      preprocess=options.preprocess, still_mode=options.still_mode, enhancer=options.enhancer,
                      batch_size=options.batch_size, size=options.size, pose_style=options.pose_style,
                      expression_scale=float(options.expression_scale), seed=options.seed,
                      engine_requested=options.engine, client_addr=(who.client_addr or "")[:64] or None,
                      user_agent=(who.user_agent or "")[:255] or None, created_at=utcnow(), **fields)
            self._insert_with_files(job, scratch, final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            self._release(key)
        logger.info("job %s queued (%s, %.1f s audio)", job_id, job.image_format, job.audio_seconds)
        self.front.runner.submit(job_id)
        return job

    def _insert_with_files(self, job: Job, scratch: Path, final: Path) -> None:
        """The row is inserted (checked by the database, invisible to others) before the folder moves into place,
        and committed after: a refused row leaves no folder, a failed commit removes the moved one."""
        try:
            with self.front.db.session() as s:
                s.add(job)
                s.flush()
                os.replace(scratch, final)
        except BaseException:
            if final.exists():
                self.front.storage.delete_job(job.id)
            raise

    def _take_image(self, upload: FileStorage | None, scratch: Path) -> dict[str, Any]:
        if upload is None or (not upload.filename and upload.content_length == 0):
            raise ApiError(400, "image: no image was sent (multipart field 'image')", field="image")
        stored = self.front.storage.save_stream(upload.stream, scratch / "image.upload")
        if stored.size == 0:
            raise ApiError(400, "image: the uploaded file is empty", field="image")
        info = check_image(stored.path)
        path = stored.path.rename(scratch / f"image.{info.extension}")
        return dict(image_name=_display_name(upload.filename), image_path=str(path), image_size=stored.size,
                    image_sha256=stored.sha256, image_format=info.format, image_width=info.width,
                    image_height=info.height)

    def _take_audio(self, upload: FileStorage | None, form: Mapping[str, str], scratch: Path) -> dict[str, Any]:
        config = self.front.config
        has_file = upload is not None and bool(upload.filename)
        text = (form.get("text") or "").strip()
        if has_file and text:
            raise ApiError(400, "audio: send either an audio file or text to speak, not both", field="audio")
        if has_file and upload is not None:
            stored = self.front.storage.save_stream(upload.stream, scratch / "audio.upload")
            if stored.size == 0:
                raise ApiError(400, "audio: the uploaded file is empty", field="audio")
            info = check_audio_file(stored.path, config.max_audio_seconds)
            path = stored.path.rename(scratch / f"audio.{info.extension}")
            return dict(audio_name=_display_name(upload.filename), audio_path=str(path), audio_size=stored.size,
                        audio_sha256=stored.sha256, audio_seconds=info.seconds, audio_source="upload")
        if "text" in form:
            from .tts import check_text, synthesize

            text, language, voice = check_text(form.get("text"), form.get("language"), form.get("voice"),
                                               config.max_text_chars)
            path = synthesize(text, language, voice, scratch / "audio.wav")
            info = check_audio_file(path, config.max_audio_seconds, field="text")
            stored = self.front.storage.describe(path)
            return dict(audio_name=None, audio_path=str(path), audio_size=stored.size, audio_sha256=stored.sha256,
                        audio_seconds=info.seconds, audio_source="tts", tts_text=text, tts_language=language,
                        tts_voice=voice)
        raise ApiError(400, "audio: no audio was sent (multipart field 'audio'), and no 'text' to speak",
                       field="audio")

    def _copy_inputs(self, source: Job, scratch: Path) -> dict[str, Any]:
        """'Generate again': the same stored inputs, new options."""
        storage = self.front.storage
        fields: dict[str, Any] = {}
        for kind in ("image", "audio"):
            src = storage.absolute(getattr(source, f"{kind}_path"))
            if not src.is_file():
                raise ApiError(410, f"the {kind} of job {source.id} is no longer stored")
            dst = scratch / src.name
            shutil.copyfile(src, dst)
            fields[f"{kind}_path"] = str(dst)
        for name in ("image_name", "image_size", "image_sha256", "image_format", "image_width", "image_height",
                     "audio_name", "audio_size", "audio_sha256", "audio_seconds", "audio_source", "tts_text",
                     "tts_voice", "tts_language"):
            fields[name] = getattr(source, name)
        return fields


def _display_name(name: str | None) -> str | None:
    """The name as uploaded, for display only (it never becomes a path)."""
    if not name:
        return None
    return name.replace("\\", "/").split("/")[-1][:255] or None


# -- reading -----------------------------------------------------------------------------------------------------

def can_see(job: Job, user: User | None) -> bool:
    """Owned jobs: only their owner. Anonymous jobs: whoever has the (unguessable) id."""
    if job.owner_id is None:
        return True
    return user is not None and user.id == job.owner_id


def queue_position(session: Any, job: Job) -> int | None:
    if job.status != "queued":
        return None
    ahead = session.scalar(select(func.count(Job.id)).where(Job.status == "queued", Job.created_at < job.created_at))
    return int(ahead or 0) + 1


def iso(value: Any) -> str | None:
    return value.isoformat(timespec="milliseconds") + "Z" if value is not None else None


def job_to_dict(job: Job, urls: dict[str, str], position: int | None = None) -> dict[str, Any]:
    def seconds(a: Any, b: Any) -> float | None:
        return round((b - a).total_seconds(), 3) if a is not None and b is not None else None

    return {
        "id": job.id,
        "status": job.status,
        "progress": round(job.progress or 0.0, 4),
        "stage": job.stage,
        "queue_position": position,
        "error": job.error,
        "error_kind": job.error_kind,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "expired_at": iso(job.expired_at),
        "timings": {
            "queued_seconds": seconds(job.created_at, job.started_at),
            "generation_seconds": round(job.generation_seconds, 3) if job.generation_seconds is not None else None,
            "total_seconds": seconds(job.created_at, job.finished_at),
        },
        "options": job.options(),
        "engine": job.engine,
        "owned": job.owner_id is not None,
        "image": {"name": job.image_name, "size": job.image_size, "sha256": job.image_sha256,
                  "format": job.image_format, "width": job.image_width, "height": job.image_height},
        "audio": {"name": job.audio_name, "size": job.audio_size, "sha256": job.audio_sha256,
                  "seconds": round(job.audio_seconds, 3), "source": job.audio_source, "text": job.tts_text,
                  "voice": job.tts_voice, "language": job.tts_language},
        "output_size": job.output_size,
        **urls,
    }
