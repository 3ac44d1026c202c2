"""What a model worker does with one job from the queue: claim the row, call its model service, write progress and
the outcome to the row. The queue decides when and where a job runs (demofront/tasks.py); the jobs table stays the
users' record (status, progress, attempts, errors, timings).

Each run of a job is one attempt: claiming bumps `jobs.attempts` and every later write is conditional on that
number, so when a job is delivered again (its worker was killed) only the newest run can finish it, and a job ends
done, failed or cancelled exactly once."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select, update

from .db import Database
from .model_client import ModelCancelledError, ModelClientProtocol, ModelError
from .models import FINAL_STATUSES, Job, JobAttempt, utcnow
from .storage import Storage
from .tasks import RetryLater, current_retries
from .validation import parse_options

logger = logging.getLogger(__name__)

PROGRESS_WRITE_SECONDS = 0.5
CANCEL_CHECK_SECONDS = 0.5


class JobVanished(Exception):
    """The row is not there (not committed yet by the front, or deleted); retried a few times, then dropped."""


class JobWorker:
    """Runs jobs by id on one model service (`client`); `max_retries` service errors are retried by the queue,
    `on_end(job_id)` is called once a job has ended (the webhook)."""

    def __init__(self, db: Database, storage: Storage, client: ModelClientProtocol, max_retries: int,
                 on_end: Callable[[str], None] | None = None, name: str | None = None) -> None:
        self.db, self.storage, self.client = db, storage, client
        self.max_retries = max_retries
        self.on_end = on_end or (lambda job_id: None)
        self.name = name or "worker"

    def __call__(self, job_id: str) -> None:
        attempt = self._claim(job_id)
        if attempt is None:
            return
        try:
            self._run(job_id, attempt)
        except RetryLater:
            raise
        except Exception as exc:  # our own bug or a dead database: end the job with a reason, never leave it running
            logger.exception("job %s: unexpected failure", job_id)
            self._end(job_id, attempt, "failed", error=f"internal error in the worker ({type(exc).__name__})",
                      error_kind="internal")
        except BaseException as exc:  # TimeLimitExceeded (the queue's hard limit), or the worker stopping
            from dramatiq.middleware import TimeLimitExceeded

            if isinstance(exc, TimeLimitExceeded):
                self._end(job_id, attempt, "failed", error="the generation ran past the time limit",
                          error_kind="timeout")
                return
            raise  # Shutdown or KeyboardInterrupt: the message is not acknowledged and comes back

    # -- claim -------------------------------------------------------------------------------------------------

    def _claim(self, job_id: str) -> int | None:
        """Take the job for this run: its attempt number, or None when there is nothing to do (it ended, was
        cancelled while queued, or was deleted)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                if current_retries() < 3:
                    raise RetryLater(f"job {job_id} is not in the database (yet)")
                logger.warning("job %s: no such job; message dropped", job_id)
                return None
            if job.status in FINAL_STATUSES:
                logger.info("job %s is already %s; message dropped", job_id, job.status)
                return None
            if job.cancel_requested:
                self._cancel_now(s, job)
                return None
            number = job.attempts + 1
            claimed = s.execute(update(Job).where(Job.id == job_id, Job.attempts == job.attempts,
                                                  Job.status.in_(("queued", "running"))).values(
                status="running", attempts=number, runner=self.name, started_at=job.started_at or utcnow(),
                stage="starting", progress=0.0, error=None, error_kind=None)).rowcount
            if claimed != 1:
                return None  # another run of the same job got there first
            # an earlier run still marked running was lost with its worker (killed): say so
            s.execute(update(JobAttempt).where(JobAttempt.job_id == job_id, JobAttempt.outcome == "running").values(
                outcome="lost", finished_at=utcnow(), error="the worker stopped during the run; delivered again"))
            s.add(JobAttempt(job_id=job_id, number=number, replica=f"{self.name} {self.client.url}"[:255],
                             started_at=utcnow(), outcome="running"))
        if number > 1:
            logger.info("job %s: attempt %d", job_id, number)
        return number

    def _cancel_now(self, s: Any, job: Job) -> None:
        job.status, job.finished_at, job.stage = "cancelled", utcnow(), None
        job.error, job.error_kind = "cancelled by the user", "cancelled"
        logger.info("job %s cancelled before it ran", job.id)
        s.flush()
        self._after_end(job.id)

    # -- run ---------------------------------------------------------------------------------------------------

    def _run(self, job_id: str, attempt: int) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            options = parse_options(job.options())
            image = self.storage.absolute(job.image_path)
            audio = self.storage.absolute(job.audio_path)
        output = self.storage.job_dir(job_id) / f"result.{attempt}.part.mp4"
        state = {"written": 0.0, "stage": "", "checked": 0.0, "cancel": False}

        def progress(fraction: float, stage: str) -> None:
            now = time.monotonic()
            if now - state["written"] < PROGRESS_WRITE_SECONDS and stage == state["stage"]:
                return
            state.update(written=now, stage=stage)
            with self.db.session() as s2:
                s2.execute(update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.status == "running")
                           .values(progress=max(0.0, min(1.0, float(fraction))), stage=stage[:200]))

        def cancelled() -> bool:
            now = time.monotonic()
            if now - state["checked"] >= CANCEL_CHECK_SECONDS:
                state["checked"] = now
                with self.db.session() as s2:
                    row = s2.execute(select(Job.cancel_requested, Job.attempts).where(Job.id == job_id)).first()
                # deleted, cancelled, or taken over by a newer run: stop this one
                state["cancel"] = row is None or bool(row[0]) or row[1] != attempt
            return state["cancel"]

        started = time.perf_counter()
        try:
            outcome = self.client.generate(image, audio, options, output, progress, cancelled=cancelled)
        except ModelCancelledError:
            output.unlink(missing_ok=True)
            self._end(job_id, attempt, "cancelled", error="cancelled by the user", error_kind="cancelled")
            return
        except ModelError as exc:
            output.unlink(missing_ok=True)
            retries = current_retries()
            if exc.kind == "service" and retries < self.max_retries:
                logger.info("job %s: %s; retry %d of %d", job_id, exc, retries + 1, self.max_retries)
                self._requeue(job_id, attempt, str(exc), retries + 1)
                raise RetryLater(str(exc)) from exc
            logger.info("job %s failed: %s", job_id, exc)
            if exc.kind == "service" and self.max_retries:
                message = f"{exc} (tried {retries + 1} times)"
            else:
                message = str(exc)
            self._end(job_id, attempt, "failed", error=message, error_kind=exc.kind)
            return
        seconds = time.perf_counter() - started
        self._finish_done(job_id, attempt, output, outcome.engine, seconds)

    def _finish_done(self, job_id: str, attempt: int, part: Path, engine: str | None, seconds: float) -> None:
        final = part.with_name("result.mp4")
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.attempts != attempt or job.status != "running":
                part.unlink(missing_ok=True)  # deleted, cancelled or superseded while it ran
                if job is None:
                    self.storage.delete_job(job_id)
                return
            os.replace(part, final)
            thumb = self._thumbnail(final)
            job.status, job.progress, job.stage, job.finished_at = "done", 1.0, None, utcnow()
            job.engine, job.generation_seconds = engine, seconds
            job.output_path, job.output_size = self.storage.relative(final), final.stat().st_size
            job.thumb_path = self.storage.relative(thumb) if thumb else None
            self._close_attempt(s, job_id, attempt, "done", None)
        logger.info("job %s done in %.1f s (attempt %d)", job_id, seconds, attempt)
        self._after_end(job_id)

    def _requeue(self, job_id: str, attempt: int, error: str, retry: int) -> None:
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.attempts == attempt, Job.status == "running").values(
                status="queued", progress=0.0, stage=f"waiting to retry ({retry} of {self.max_retries}) after: "
                                                     f"{error}"[:200]))
            self._close_attempt(s, job_id, attempt, "retry", error)

    def _end(self, job_id: str, attempt: int, status: str, error: str, error_kind: str) -> None:
        with self.db.session() as s:
            ended = s.execute(update(Job).where(Job.id == job_id, Job.attempts == attempt,
                                                Job.status.in_(("queued", "running"))).values(
                status=status, error=error, error_kind=error_kind, finished_at=utcnow(), stage=None)).rowcount
            self._close_attempt(s, job_id, attempt, "cancelled" if status == "cancelled" else "failed", error)
        if ended:
            self._after_end(job_id)

    @staticmethod
    def _close_attempt(s: Any, job_id: str, attempt: int, outcome: str, error: str | None) -> None:
        s.execute(update(JobAttempt).where(JobAttempt.job_id == job_id, JobAttempt.number == attempt).values(
            outcome=outcome, error=error, finished_at=utcnow()))

    def _after_end(self, job_id: str) -> None:
        try:
            self.on_end(job_id)
        except Exception:
            logger.exception("job %s: could not queue its webhook", job_id)

    @staticmethod
    def _thumbnail(video: Path) -> Path | None:
        """A small JPEG of the video's first frame for the history page."""
        from PIL import Image

        from sadtalker.errors import FFmpegError
        from sadtalker.io.video import iter_video_frames

        try:
            frame = next(iter_video_frames(video, max_frames=1))
        except (FFmpegError, StopIteration, OSError) as exc:
            logger.warning("no thumbnail for %s: %s", video, exc)
            return None
        thumb = video.with_name("thumb.jpg")
        image = Image.fromarray(frame)
        image.thumbnail((320, 320))
        image.save(thumb, quality=85)
        return thumb
