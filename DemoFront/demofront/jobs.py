"""Making a job from a request (checks, storage, rate limit, row) and reading jobs back for one viewer."""
from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
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


class JobFactory:
    """Turns a multipart request into a stored, queued job, or an ApiError naming the field at fault."""

    def __init__(self, front: Any) -> None:  # front: demofront.Front (avoids an import cycle)
        self.front = front
        self._rate_lock = threading.Lock()
        self._pending: dict[str, int] = {}

    # -- rate limit --------------------------------------------------------------------------------------------

    def _rate_key(self, who: Requester) -> tuple[str, Any]:
        return ("user", who.user.id) if who.user else ("addr", who.client_addr)

    def _reserve(self, who: Requester) -> str | None:
        """Count this request against the limit (jobs created in the window + requests being checked now)."""
        rate = self.front.config.rate
        if rate is None:
            return None
        limit, window = rate
        kind, value = self._rate_key(who)
        key = f"{kind}:{value}"
        since = utcnow() - timedelta(seconds=window)
        column = Job.owner_id if kind == "user" else Job.client_addr
        with self._rate_lock:
            with self.front.db.session() as s:
                count, oldest = s.execute(
                    select(func.count(Job.id), func.min(Job.created_at)).where(column == value,
                                                                               Job.created_at >= since)
                ).one()
            if count + self._pending.get(key, 0) >= limit:
                retry = window if oldest is None else (oldest + timedelta(seconds=window) - utcnow()).total_seconds()
                retry_after = max(1, math.ceil(retry))
                raise ApiError(429, f"rate limit reached: at most {limit} generations per {window:g} s; "
                                    f"try again in {retry_after} s", headers={"Retry-After": str(retry_after)})
            self._pending[key] = self._pending.get(key, 0) + 1
        return key

    def _release(self, key: str | None) -> None:
        if key is None:
            return
        with self._rate_lock:
            self._pending[key] -= 1
            if self._pending[key] <= 0:
                del self._pending[key]

    # -- creation ----------------------------------------------------------------------------------------------

    def create(self, form: Mapping[str, str], files: Mapping[str, FileStorage], who: Requester,
               reuse_inputs_of: Job | None = None) -> Job:
        config = self.front.config
        storage = self.front.storage
        options = parse_options(form.to_dict() if hasattr(form, "to_dict") else dict(form))
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
            os.replace(scratch, final)
            for name in ("image_path", "audio_path"):
                fields[name] = storage.relative(final / Path(fields[name]).name)
            job = Job(id=job_id, owner_id=who.user.id if who.user else None, status="queued", progress=0.0,
                      preprocess=options.preprocess, still_mode=options.still_mode, enhancer=options.enhancer,
                      batch_size=options.batch_size, size=options.size, pose_style=options.pose_style,
                      expression_scale=float(options.expression_scale), seed=options.seed,
                      engine_requested=options.engine, client_addr=(who.client_addr or "")[:64] or None,
                      user_agent=(who.user_agent or "")[:255] or None, created_at=utcnow(), **fields)
            with self.front.db.session() as s:
                s.add(job)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            self._release(key)
        logger.info("job %s queued (%s, %.1f s audio)", job_id, job.image_format, job.audio_seconds)
        self.front.runner.submit(job_id)
        return job

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
