"""Background generation: a thread pool takes job ids, calls the model service, and writes progress and the
outcome to the job row, so no web request ever waits on a generation (except `?wait=true`, by choice)."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .db import Database
from .model_client import ModelClientProtocol, ModelError
from .models import Job, utcnow
from .storage import Storage
from .validation import parse_options

logger = logging.getLogger(__name__)

PROGRESS_WRITE_SECONDS = 0.5
RESTART_REASON = "the front restarted while the job was running; generate again"


def instance_name() -> str:
    """This front process's name on job rows (FRONT_INSTANCE, else the host name: a Kubernetes pod's name)."""
    return (os.environ.get("FRONT_INSTANCE") or socket.gethostname() or "front")[:64]


class JobRunner:
    def __init__(self, db: Database, storage: Storage, client: ModelClientProtocol, workers: int,
                 stale_seconds: float | None = None) -> None:
        self.db, self.storage, self.client = db, storage, client
        self.instance = instance_name()
        self.stale_seconds = stale_seconds  # a job running longer than this has lost its front (any instance)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
        self._finished: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: str) -> None:
        with self._lock:
            self._finished.setdefault(job_id, threading.Event())
        self._pool.submit(self._run_safely, job_id)

    def wait(self, job_id: str, timeout: float) -> bool:
        """Block until the job ends (True) or `timeout` passes (False)."""
        with self._lock:
            event = self._finished.get(job_id)
        if event is not None:
            return event.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a job this process did not start: watch its row
            with self.db.session() as s:
                job = s.get(Job, job_id)
                if job is None or job.status in ("done", "failed"):
                    return True
            time.sleep(0.5)
        return False

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def abandon(self) -> int:
        """On stop (SIGTERM, e.g. a rolling update): fail the jobs this instance is running, with the restart
        reason, instead of leaving them 'running' for a front that may never come back under this name."""
        from sqlalchemy import update

        with self.db.session() as s:
            count = s.execute(update(Job).where(Job.status == "running", Job.runner == self.instance).values(
                status="failed", error=RESTART_REASON, error_kind="restart", finished_at=utcnow(), stage=None)
            ).rowcount
        if count:
            logger.info("stopping: %d running job(s) marked failed", count)
        return count

    def recover(self) -> tuple[int, int]:
        """At start-up: jobs this instance was running are failed with a reason; queued ones (inputs stored) run
        again. Several fronts may share the database: each job is claimed atomically (see `_run`), and only
        this instance's (or unowned) running jobs are failed, never another front's."""
        from datetime import timedelta

        from sqlalchemy import or_, select, update

        mine = or_(Job.runner == self.instance, Job.runner.is_(None))
        if self.stale_seconds is not None:  # e.g. a replaced Kubernetes pod's jobs, which no front will finish
            mine = or_(mine, Job.started_at < utcnow() - timedelta(seconds=self.stale_seconds))
        with self.db.session() as s:
            failed = s.execute(
                update(Job).where(Job.status == "running", mine).values(
                    status="failed", error=RESTART_REASON, error_kind="restart", finished_at=utcnow(), stage=None)
            ).rowcount
            queued = list(s.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.created_at)))
        for job_id in queued:
            self.submit(job_id)
        if failed or queued:
            logger.info("start-up: %d interrupted job(s) marked failed, %d queued job(s) re-queued", failed,
                        len(queued))
        return failed, len(queued)

    # -- one job ---------------------------------------------------------------------------------------------

    def _run_safely(self, job_id: str) -> None:
        try:
            self._run(job_id)
        except Exception:
            logger.exception("job %s: unexpected failure", job_id)
            self._finish(job_id, status="failed", error="internal error in the front while running the job",
                         error_kind="internal")
        finally:
            with self._lock:
                event = self._finished.pop(job_id, None)
            if event is not None:
                event.set()

    def _run(self, job_id: str) -> None:
        from sqlalchemy import update

        with self.db.session() as s:
            claimed = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(
                status="running", started_at=utcnow(), stage="starting", progress=0.0, runner=self.instance)
            ).rowcount
            if claimed != 1:  # gone, or another front (or thread) took it first
                return
            job = s.get(Job, job_id)
            options = parse_options(job.options())  # the seed exactly (up to 2**63-1)
            image = self.storage.absolute(job.image_path)
            audio = self.storage.absolute(job.audio_path)
        output = self.storage.job_dir(job_id) / "result.mp4"
        last = {"t": 0.0, "stage": ""}

        def progress(fraction: float, stage: str) -> None:
            now = time.monotonic()
            if now - last["t"] < PROGRESS_WRITE_SECONDS and stage == last["stage"]:
                return
            last.update(t=now, stage=stage)
            with self.db.session() as s2:
                row = s2.get(Job, job_id)
                if row is not None and row.status == "running":
                    row.progress = max(0.0, min(1.0, float(fraction)))
                    row.stage = stage[:200]

        started = time.perf_counter()
        extra = {"on_attempt": self._attempt_recorder(job_id)} if getattr(self.client, "records_attempts", False) else {}
        try:
            outcome = self.client.generate(image, audio, options, output, progress, **extra)
        except ModelError as exc:
            logger.info("job %s failed: %s", job_id, exc)
            self._finish(job_id, status="failed", error=str(exc), error_kind=exc.kind)
            return
        seconds = time.perf_counter() - started
        thumb = self._thumbnail(output)
        if not self._finish(job_id, status="done", engine=outcome.engine, generation_seconds=seconds,
                            output_path=self.storage.relative(output), output_size=output.stat().st_size,
                            thumb_path=self.storage.relative(thumb) if thumb else None, progress=1.0):
            self.storage.delete_job(job_id)  # deleted while it ran: drop what it made

    def _attempt_recorder(self, job_id: str):  # -> Callable[[replicas.Attempt], None]
        """Writes each try on a model replica (start, then outcome) to the job's attempts."""
        from datetime import datetime, timezone

        from sqlalchemy import select

        from .models import JobAttempt

        def stamp(seconds: float | None):
            return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)

        def record(attempt) -> None:
            with self.db.session() as s:
                row = s.scalar(select(JobAttempt).where(JobAttempt.job_id == job_id,
                                                        JobAttempt.number == attempt.number))
                if row is None:
                    if s.get(Job, job_id) is None:  # deleted while it ran
                        return
                    row = JobAttempt(job_id=job_id, number=attempt.number)
                    s.add(row)
                row.replica, row.outcome, row.error = attempt.replica[:255], attempt.outcome, attempt.error
                row.started_at, row.finished_at = stamp(attempt.started_at), stamp(attempt.finished_at)
                if attempt.outcome == "running":
                    job = s.get(Job, job_id)
                    job.stage = (f"sent to model replica {attempt.replica}" if attempt.number == 1 else
                                 f"retry {attempt.number - 1} on model replica {attempt.replica}")[:200]

        return record

    def _finish(self, job_id: str, **values: object) -> bool:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return False
            for key, value in values.items():
                setattr(job, key, value)
            job.finished_at = utcnow()
            job.stage = None
            return True

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
