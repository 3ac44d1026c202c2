"""Bounds on what one client can make the front do: the client address behind a proxy (ProxyFix, TRUSTED_PROXIES),
the queue per account and overall (429 / 503), the field-size 413, refused uploads counted by the rate limit,
and numbers outside the database's range answered 4xx. Runs on SQLite and, when TEST_POSTGRES_URL is set, on
PostgreSQL."""
from __future__ import annotations

import threading

import pytest
from front_support import FakeModelClient, api_key_for, client, db_kind, make_app, upload  # noqa: F401
from sqlalchemy import func, select

from demofront.models import Job


def generate(client, portrait_path, speech_path, headers=None, **fields):
    return client.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path), **fields},
                       headers=headers or {}, content_type="multipart/form-data")


@pytest.mark.parametrize("trusted", [0, 1])
def test_forwarded_address_is_used_only_when_proxies_are_trusted(make_app, portrait_path, speech_path, trusted):
    app = make_app(rate_limit="1/minute", trusted_proxies=trusted)
    web = app.test_client()
    first = generate(web, portrait_path, speech_path, headers={"X-Forwarded-For": "203.0.113.7"})
    second = generate(web, portrait_path, speech_path, headers={"X-Forwarded-For": "198.51.100.9"})
    assert first.status_code == 202
    with app.extensions["demofront"].db.session() as s:
        recorded = s.scalar(select(Job.client_addr).where(Job.id == first.json["id"]))
    if trusted:  # behind the Ingress: each client has its own allowance and is recorded as itself
        assert second.status_code == 202 and recorded == "203.0.113.7"
    else:  # a client cannot pick its own address: both come from 127.0.0.1 and share one allowance
        assert second.status_code == 429 and recorded == "127.0.0.1"


def test_refused_uploads_count_against_the_rate_limit(make_app, portrait_path, speech_path, tmp_path):
    web = make_app(rate_limit="2/minute").test_client()
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert [generate(web, junk, speech_path).status_code for _ in range(2)] == [400, 400]
    reply = generate(web, portrait_path, speech_path)
    assert reply.status_code == 429 and "Retry-After" in reply.headers


def test_queue_is_bounded_per_account_and_overall(make_app, portrait_path, speech_path):
    gate = threading.Event()
    app = make_app(FakeModelClient(gate=gate), workers=1, max_queued_per_account=2, max_queued_jobs=3)
    anonymous = app.test_client()
    try:
        assert [generate(anonymous, portrait_path, speech_path).status_code for _ in range(2)] == [202, 202]
        full = generate(anonymous, portrait_path, speech_path)
        assert full.status_code == 429 and full.is_json and "generations queued or running" in full.json["error"]
        assert int(full.headers["Retry-After"]) > 0
        carol = {"Authorization": f"Bearer {api_key_for(app.test_client(), 'carol')}"}
        assert generate(app.test_client(), portrait_path, speech_path, headers=carol).status_code == 202
        dave = {"Authorization": f"Bearer {api_key_for(app.test_client(), 'dave')}"}
        busy = generate(app.test_client(), portrait_path, speech_path, headers=dave)
        assert busy.status_code == 503 and "the queue is full" in busy.json["error"]
        assert int(busy.headers["Retry-After"]) > 0
        front = app.extensions["demofront"]
        with front.db.session() as s:
            assert s.scalar(select(func.count(Job.id))) == 3
        assert len(list((front.storage.root / "jobs").iterdir())) == 3  # the refused ones stored nothing
        assert not any((front.storage.root / "incoming").iterdir())
    finally:
        gate.set()
    with front.db.session() as s:
        ids = list(s.scalars(select(Job.id)))
    assert all(front.wait(job_id, 30) for job_id in ids)
    assert generate(anonymous, portrait_path, speech_path).status_code == 202  # room again


def test_an_oversized_form_field_names_the_field_limit(make_app, portrait_path):
    web = make_app().test_client()
    reply = web.post("/api/generate", data={"image": upload(portrait_path), "text": "a" * (1024 * 1024 + 10)},
                     content_type="multipart/form-data")
    assert reply.status_code == 413 and reply.is_json
    assert "form field is too large (the limit is 1 MB per text field" in reply.json["error"], reply.json
    assert "50 MB" not in reply.json["error"]


def test_numbers_past_the_database_range_are_4xx(make_app):
    app = make_app()
    web = app.test_client()
    key = {"Authorization": f"Bearer {api_key_for(web, 'counter')}"}
    listed = web.get(f"/api/jobs?page={10**30}&per_page={10**30}", headers=key)
    assert listed.status_code == 200 and listed.json["jobs"] == [] and listed.json["per_page"] == 100
    assert web.delete(f"/api/keys/{2**63}", headers=key).status_code == 404
    assert web.get(f"/history?page={10**30}", headers=key).status_code in (200, 303)
