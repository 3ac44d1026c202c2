"""Making a job from a request (checks, storage, rate limit, row) and reading jobs back for one viewer."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    api_key_id: int | None = None  # set when the request came with an API key


QUEUE_RETRY_AFTER_SECONDS = 30  # what a refused client is told to wait when a queue bound is reached


class JobFactory:
    """Turns a multipart request into a stored, queued job, or an ApiError naming the field at fault.

    Order: options (every number's range) and callback URL -> queue bounds -> inputs checked in a private scratch
    folder -> the row inserted, the folder moved into place and the message sent to the queue in one transaction,
    so a job's files, its row and its message appear together or not at all (a worker that gets the message
    before the commit finds no row and retries). Requests per minute are limited before this (rate_limits.py)."""

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
        callback_url = self._callback_url(form, who)
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
            message = self.front.queue.job_message(job_id)
            job = Job(id=job_id, owner_id=who.user.id if who.user else None, status="queued", progress=0.0,
                      client_addr=(who.client_addr or "")[:64] or None, attempts=0, message_id=message.message_id,
                      user_agent=(who.user_agent or "")[:255] or None, created_at=utcnow(),
                      api_key_id=who.api_key_id, callback_url=callback_url,
                      webhook_status="pending" if callback_url else None, **fields)
            job.set_options(options)
            self._insert_with_files(job, scratch, final, message)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            self._release(key)
        logger.info("job %s queued (%s, %.1f s audio)", job_id, job.image_format, job.audio_seconds)
        return job

    def _callback_url(self, form: Mapping[str, str], who: Requester) -> str | None:
        url = (form.get("callback_url") or "").strip()
        if not url:
            return None
        if who.api_key_id is None:
            raise ApiError(400, "callback_url: webhooks need an API key (Authorization: Bearer <key>); deliveries "
                                "are signed with its webhook secret", field="callback_url")
        from .webhooks import check_callback_url

        return check_callback_url(url, self.front.config.webhook_allow_private)

    def _insert_with_files(self, job: Job, scratch: Path, final: Path, message: Any) -> None:
        """The row is inserted (checked by the database, invisible to others) before the folder moves into place
        and the message is sent, and committed after: a refused row leaves no folder and no message, a failed
        commit removes the moved folder (its message then finds no row and is dropped)."""
        try:
            with self.front.db.session() as s:
                s.add(job)
                s.flush()
                os.replace(scratch, final)
                try:
                    self.front.queue.send(message)
                except Exception as exc:  # the broker is down or refused: nothing is kept, the client may retry
                    logger.error("job %s not queued: %s", job.id, exc)
                    raise ApiError(503, "the job queue is unreachable; nothing was stored, please try again in a "
                                        "minute") from exc
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


    # -- the end of a job, cancelling ---------------------------------------------------------------------------

    def ended(self, job_id: str) -> None:
        """A job reached done, failed or cancelled: queue its webhook if it has one."""
        with self.front.db.session() as s:
            has_callback = s.scalar(select(Job.callback_url).where(Job.id == job_id)) is not None
        if has_callback:
            self.front.queue.send_webhook(job_id)

    def cancel(self, job_id: str) -> str:
        """Cancel a job: a queued one ends `cancelled` now (its message is dropped when a worker gets it); for a
        running one the flag is set and its worker abandons the model service's job at its next progress check.
        Returns the status after the request."""
        from sqlalchemy import update

        with self.front.db.session() as s:
            now_cancelled = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(
                status="cancelled", cancel_requested=True, finished_at=utcnow(), stage=None,
                error="cancelled by the user", error_kind="cancelled")).rowcount
            if not now_cancelled:
                s.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(
                    cancel_requested=True, stage="cancelling"))
            status = s.scalar(select(Job.status).where(Job.id == job_id))
        if now_cancelled:
            logger.info("job %s cancelled while queued", job_id)
            self.ended(job_id)
        return status or "deleted"


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
    """1 for the next job to start. The queue is first in, first out; a job waiting to retry keeps its place."""
    if job.status != "queued":
        return None
    ahead = session.scalar(select(func.count(Job.id)).where(Job.status == "queued", Job.created_at < job.created_at))
    return int(ahead or 0) + 1


def estimated_start(session: Any, position: int | None, workers: int) -> datetime | None:
    """When a queued job should start: the jobs ahead of it and those running, shared by the live workers, each
    taking the median time of the last 50 finished generations. None without history or workers."""
    if position is None or workers < 1:
        return None
    recent = sorted(s for s in session.scalars(
        select(Job.generation_seconds).where(Job.status == "done", Job.generation_seconds.is_not(None))
        .order_by(Job.finished_at.desc()).limit(50)))
    if not recent:
        return None
    typical = recent[len(recent) // 2]
    running = session.scalar(select(func.count(Job.id)).where(Job.status == "running")) or 0
    rounds = (position - 1 + running) // workers  # whole rounds of work before a worker is free for this one
    return utcnow() + timedelta(seconds=rounds * typical)


def iso(value: Any) -> str | None:
    return value.isoformat(timespec="milliseconds") + "Z" if value is not None else None


def job_to_dict(job: Job, urls: dict[str, str], position: int | None = None,
                start: datetime | None = None) -> dict[str, Any]:
    def seconds(a: Any, b: Any) -> float | None:
        return round((b - a).total_seconds(), 3) if a is not None and b is not None else None

    return {
        "id": job.id,
        "status": job.status,
        "progress": round(job.progress or 0.0, 4),
        "stage": job.stage,
        "queue_position": position,
        "estimated_start_at": iso(start),
        "attempt_count": job.attempts,
        "cancel_requested": bool(job.cancel_requested),
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
        "webhook": None if not job.callback_url else {
            "url": job.callback_url, "status": job.webhook_status, "attempts": job.webhook_attempts,
            "error": job.webhook_error, "delivered_at": iso(job.webhook_delivered_at)},
        **urls,
    }
