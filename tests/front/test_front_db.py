"""The database layer: migrations, the job table's records, survival across restarts, and the admin insight
queries (computed in SQL), on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from front_support import api_key_for, app, db_kind, make_app, sign_up, upload, wait_for_job  # noqa: F401
from sqlalchemy import inspect, select, text

from demofront.admin import insight
from demofront.models import Base, Job, User


def test_migrations_build_the_models_schema(app):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = app.extensions["demofront"].db
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head_revision()
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == [], diffs
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "api_keys", "jobs", "alembic_version"} <= tables
    db.upgrade()  # idempotent


def _head_revision() -> str:
    """The newest migration (one head: a second head means two branches added migrations without a merge)."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from demofront.db import MIGRATIONS

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    return heads[0]


def _job(**values) -> Job:
    base = dict(id=uuid.uuid4().hex, status="done", progress=1.0, preprocess="crop", still_mode=False,
                enhancer=False, batch_size=2, size=256, pose_style=0, expression_scale=1.0, seed=0,
                engine_requested="auto", image_path="jobs/x/image.png", image_size=1, image_sha256="0" * 64,
                image_format="PNG", image_width=512, image_height=512, audio_path="jobs/x/audio.wav", audio_size=1,
                audio_sha256="0" * 64, audio_seconds=3.0, engine="landmark")
    base.update(values)
    return Job(**base)


def test_finished_jobs_survive_a_restart(make_app, portrait_path, speech_path):
    first = make_app()
    web = first.test_client()
    job = web.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path)}).json
    done = wait_for_job(web, job["id"])
    assert done["status"] == "done"
    first.extensions["demofront"].close()
    again = make_app().test_client().get(f"/api/jobs/{job['id']}")
    assert again.status_code == 200 and again.json["status"] == "done"
    assert again.json["image"]["sha256"] == done["image"]["sha256"]
    assert make_app().test_client().get(done["video_url"]).status_code == 200


def test_passwords_are_hashed_and_first_admin_comes_from_settings(app):
    sign_up(app.test_client(), "admin", "a long password")
    sign_up(app.test_client(), "plain", "a long password")
    with app.extensions["demofront"].db.session() as s:
        users = {u.username: u for u in s.scalars(select(User))}
    assert users["admin"].is_admin and not users["plain"].is_admin
    assert "a long password" not in users["plain"].password_hash
    assert users["plain"].password_hash.startswith(("scrypt:", "pbkdf2:"))


def test_insight_is_computed_in_sql(app):
    front = app.extensions["demofront"]
    web = app.test_client()
    api_key_for(web, "ann")
    api_key_for(app.test_client(), "ben")
    with front.db.session() as s:
        ann = s.scalar(select(User).where(User.username == "ann"))
        ben = s.scalar(select(User).where(User.username == "ben"))
        day1, day2 = datetime(2026, 1, 2, 10), datetime(2026, 1, 3, 9)
        # 20 landmark/crop jobs with 1..20 s: nearest-rank median 10, p95 19
        for i in range(1, 21):
            s.add(_job(owner_id=ann.id, created_at=day1, generation_seconds=float(i)))
        for seconds in (5.0, 7.0, 9.0):
            s.add(_job(owner_id=ben.id, created_at=day2, generation_seconds=seconds, engine="sadtalker", size=512))
        for reason, count in (("no face found in the image", 3), ("the model service is unreachable at x", 1)):
            for _ in range(count):
                s.add(_job(owner_id=ben.id, created_at=day2, status="failed", error=reason, engine=None))
        s.add(_job(owner_id=None, created_at=day2, status="queued", engine=None))
    with front.db.session() as s:
        data = insight(s)
    per_day = {(r["day"], r["status"]): r["jobs"] for r in data["per_day"]}
    assert per_day == {("2026-01-02", "done"): 20, ("2026-01-03", "done"): 3, ("2026-01-03", "failed"): 4,
                       ("2026-01-03", "queued"): 1}
    times = {(r["engine"], r["size"]): (r["n"], r["p50"], r["p95"]) for r in data["generation_seconds"]}
    assert times == {("landmark", 256): (20, 10.0, 19.0), ("sadtalker", 512): (3, 7.0, 9.0)}
    assert [(r["error"], r["jobs"]) for r in data["failures"]] == [("no face found in the image", 3),
                                                                  ("the model service is unreachable at x", 1)]
    assert [(r["username"], r["jobs"], r["failed"]) for r in data["busiest_users"]] == [("ann", 20, 0), ("ben", 7, 4)]
    assert data["anonymous_jobs"] == 1


def test_insight_page_is_admin_only(app):
    admin, other = app.test_client(), app.test_client()
    sign_up(admin, "admin")
    sign_up(other, "mallory")
    assert admin.get("/admin/insight").status_code == 200
    assert "Failure reasons" in admin.get("/admin/insight").get_data(as_text=True)
    assert other.get("/admin/insight").status_code == 403
    assert other.get("/api/admin/insight").status_code == 403 and other.get("/api/admin/insight").is_json
    assert app.test_client().get("/api/admin/insight").status_code == 401


def test_history_is_paginated_newest_first(make_app):
    app = make_app(page_size=5)
    web = app.test_client()
    sign_up(web, "gina")
    front = app.extensions["demofront"]
    with front.db.session() as s:
        gina = s.scalar(select(User).where(User.username == "gina"))
        start = datetime(2026, 2, 1)
        ids = []
        for i in range(12):
            job = _job(owner_id=gina.id, created_at=start + timedelta(minutes=i))
            ids.append(job.id)
            s.add(job)
    newest_first = ids[::-1]
    page1 = web.get("/history").get_data(as_text=True)
    page3 = web.get("/history?page=3").get_data(as_text=True)
    assert all(i in page1 for i in newest_first[:5]) and not any(i in page1 for i in newest_first[5:])
    assert all(i in page3 for i in newest_first[10:]) and "page 3 of 3" in page3
    assert page1.index(newest_first[0]) < page1.index(newest_first[4])
