"""Retention: a finished job older than JOB_RETENTION_DAYS loses its files while its row stays as history
(`expired_at` set; the API answers 410 for its video and inputs). The same sweep removes what no row owns: a job
folder whose row never committed (a crash between the two) and scratch folders of abandoned uploads. One daemon
thread per front sweeps every RETENTION_SWEEP_MINUTES; sweeps are idempotent, so several fronts may sweep."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from .db import Database
from .models import FINAL_STATUSES, Job, utcnow
from .storage import Storage

logger = logging.getLogger(__name__)

BATCH = 500
ORPHAN_GRACE_SECONDS = 3600.0  # older than any upload still being checked


@dataclass(frozen=True)
class SweepResult:
    expired: int  # jobs whose files were removed now
    orphans: int  # folders removed that no job row owns


class RetentionSweeper:
    def __init__(self, db: Database, storage: Storage, retention_days: float, interval_seconds: float) -> None:
        self.db, self.storage = db, storage
        self.retention_days, self.interval_seconds = retention_days, interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Condition()
        self.sweeps = 0  # completed by the thread (tests wait on it with `wait_for_sweeps`)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def wait_for_sweeps(self, count: int, timeout: float) -> bool:
        with self._done:
            return self._done.wait_for(lambda: self.sweeps >= count, timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.sweep()
                if result.expired or result.orphans:
                    logger.info("retention: %d job(s) expired, %d orphaned folder(s) removed", result.expired,
                                result.orphans)
            except Exception:  # a database outage must not end the thread; the next sweep tries again
                logger.exception("retention sweep failed")
            with self._done:
                self.sweeps += 1
                self._done.notify_all()
            self._stop.wait(self.interval_seconds)

    def sweep(self, now: datetime | None = None) -> SweepResult:
        now = now or utcnow()
        expired = self._expire(now) if self.retention_days > 0 else 0
        return SweepResult(expired=expired, orphans=self._remove_orphans())

    def _expire(self, now: datetime) -> int:
        """Files first, then the mark: a sweep interrupted between the two redoes the job next time."""
        cutoff = now - timedelta(days=self.retention_days)
        ended = func.coalesce(Job.finished_at, Job.created_at)
        count = 0
        while True:
            with self.db.session() as s:
                ids = list(s.scalars(select(Job.id).where(Job.status.in_(FINAL_STATUSES),
                                                          Job.expired_at.is_(None), ended < cutoff)
                                     .order_by(Job.created_at).limit(BATCH)))
            for job_id in ids:
                self.storage.delete_job(job_id)
                with self.db.session() as s:
                    s.execute(update(Job).where(Job.id == job_id, Job.expired_at.is_(None)).values(expired_at=now))
            count += len(ids)
            if len(ids) < BATCH:
                return count

    def _remove_orphans(self) -> int:
        old = time.time() - ORPHAN_GRACE_SECONDS
        removed = 0
        for folder in ("incoming", "jobs"):
            candidates = {p.name: p for p in (self.storage.root / folder).iterdir()
                          if p.is_dir() and p.stat().st_mtime < old}
            if folder == "jobs":
                known = self._known(list(candidates))
                candidates = {name: path for name, path in candidates.items() if name not in known}
            for path in candidates.values():
                logger.info("retention: removing %s (no job row owns it)", path)
                self.storage.remove_tree(path)
                removed += 1
        return removed

    def _known(self, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(ids), BATCH):
            with self.db.session() as s:
                known.update(s.scalars(select(Job.id).where(Job.id.in_(ids[start:start + BATCH]))))
        return known
