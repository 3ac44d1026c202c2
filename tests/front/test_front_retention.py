"""Retention (JOB_RETENTION_DAYS): a finished job older than the retention loses its files, keeps its row, and its
files answer 410; newer jobs, unfinished ones and JOB_RETENTION_DAYS=0 keep everything; folders no row owns are
removed. Runs on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL."""
from __future__ import annotations

import os
import time
from datetime import timedelta

from front_support import csrf_of, db_kind, make_app, upload, wait_for_job  # noqa: F401
from sqlalchemy import update

from demofront.models import Job, utcnow


def finished_job(web, portrait_path, speech_path) -> dict:
    reply = web.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path)})
    assert reply.status_code == 202, reply.json
    done = wait_for_job(web, reply.json["id"])
    assert done["status"] == "done"
    return done


def quiet_sweeper(app):
    """The app's front, once its sweeper thread's start-up pass is over (the next is an hour away), so the
    test's own `sweep()` calls are the only ones."""
    front = app.extensions["demofront"]
    assert front.sweeper.wait_for_sweeps(1, timeout=30)
    return front


def age(front, job_id: str, days: float) -> None:
    with front.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(days=days)))


def test_an_expired_job_loses_its_files_and_keeps_its_row(make_app, portrait_path, speech_path):
    app = make_app(job_retention_days=30)
    front, web = quiet_sweeper(app), app.test_client()
    old, recent = (finished_job(web, portrait_path, speech_path) for _ in range(2))
    age(front, old["id"], 31)
    age(front, recent["id"], 29)
    result = front.sweeper.sweep()
    assert result.expired == 1
    assert not front.storage.job_dir(old["id"]).exists()
    assert front.storage.job_dir(recent["id"]).is_dir()
    history = web.get(f"/api/jobs/{old['id']}")
    assert history.status_code == 200 and history.json["status"] == "done" and history.json["expired_at"]
    assert history.json["video_url"] is None and history.json["image"]["sha256"] == old["image"]["sha256"]
    for path in ("video", "image", "audio"):
        gone = web.get(f"/api/jobs/{old['id']}/{path}")
        assert gone.status_code == 410 and gone.is_json and "expired" in gone.json["error"], (path, gone.json)
    assert web.get(old["video_url"]).status_code == 410
    assert web.get(recent["video_url"]).status_code == 200
    page = web.get(f"/jobs/{old['id']}").get_data(as_text=True)
    assert "have expired" in page and "<video" not in page and old["video_url"] not in page
    again = web.post(f"/jobs/{old['id']}/again", data={"csrf_token": csrf_of(web)})
    assert again.status_code == 410 and "expired" in again.get_data(as_text=True)  # no inputs to reuse
    assert front.sweeper.sweep().expired == 0  # idempotent


def test_retention_zero_keeps_everything(make_app, portrait_path, speech_path):
    app = make_app(job_retention_days=0)
    front, web = quiet_sweeper(app), app.test_client()
    job = finished_job(web, portrait_path, speech_path)
    age(front, job["id"], 3650)
    assert front.sweeper.sweep().expired == 0
    assert web.get(job["video_url"]).status_code == 200


def test_the_sweeper_thread_expires_old_jobs_at_start_up(make_app, portrait_path, speech_path):
    first = make_app(job_retention_days=1)
    job = finished_job(first.test_client(), portrait_path, speech_path)
    age(first.extensions["demofront"], job["id"], 2)
    second = make_app(job_retention_days=1)  # a front starting: its sweeper's first pass runs at once
    assert second.extensions["demofront"].sweeper.wait_for_sweeps(1, timeout=30)
    assert second.test_client().get(job["video_url"]).status_code == 410


def test_folders_without_a_row_are_removed_after_a_grace_period(make_app):
    front = quiet_sweeper(make_app())
    stale_job, fresh_job = front.storage.job_dir("a" * 32), front.storage.job_dir("b" * 32)
    stale_scratch = front.storage.incoming("c" * 32)
    for folder in (stale_job, fresh_job):
        folder.mkdir(parents=True)
        (folder / "image.png").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for folder in (stale_job, stale_scratch):
        os.utime(folder, (two_hours_ago, two_hours_ago))
    assert front.sweeper.sweep().orphans == 2
    assert not stale_job.exists() and not stale_scratch.exists() and fresh_job.is_dir()
