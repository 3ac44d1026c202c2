"""Webhooks and cancel in one process (QUEUE_URL=memory://, a fake model): a signed delivery of the job's JSON when
it ends, retries with backoff on a failing receiver, refusal of non-http(s), loopback and private callback URLs,
the secret shown once, and cancelling queued and running jobs."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from front_support import FakeModelClient, app, csrf_of, db_kind, make_app, sign_up, upload  # noqa: F401

from demofront.webhooks import SIGNATURE_HEADER, verify


class Receiver:
    """An HTTP server that answers `fail_first` POSTs with 500, then 200, and keeps what it got."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first, self.received = fail_first, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((self.headers, body))  # case-insensitive names
                self.send_response(500 if len(outer.received) <= outer.fail_first else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def new_key(client) -> dict:
    sign_up(client, "hooks")
    reply = client.post("/api/keys", json={"name": "hooks"}, headers={"X-CSRF-Token": csrf_of(client)})
    assert reply.status_code == 201 and reply.json["webhook_secret"].startswith("whsec_")
    listed = client.get("/api/keys").json["keys"]
    assert all("webhook_secret" not in k and "key" not in k for k in listed)  # shown once
    return reply.json


def generate(client, portrait_path, speech_path, headers=None, **fields):
    return client.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path), **fields},
                       headers=headers or {}, content_type="multipart/form-data")


@pytest.mark.parametrize("fail_first", [0, 2])
def test_webhook_is_signed_and_retried_until_delivered(make_app, portrait_path, speech_path, fail_first):
    receiver = Receiver(fail_first=fail_first)
    try:
        web = make_app(webhook_allow_private=True).test_client()
        key = new_key(web)
        bearer = {"Authorization": f"Bearer {key['key']}"}
        job = generate(web, portrait_path, speech_path, headers=bearer, callback_url=receiver.url).json
        assert job["webhook"]["status"] == "pending"
        final = wait_until(lambda: (lambda j: j if j["webhook"]["status"] == "delivered" else None)(
            web.get(f"/api/jobs/{job['id']}", headers=bearer).json), 30, "the webhook")
        assert final["status"] == "done" and final["webhook"]["attempts"] == fail_first + 1
        assert len(receiver.received) == fail_first + 1
        headers, body = receiver.received[-1]
        assert verify(key["webhook_secret"], headers[SIGNATURE_HEADER], body)
        assert not verify("whsec_wrong", headers[SIGNATURE_HEADER], body)
        sent = json.loads(body)
        assert sent["event"] == "job.ended" and sent["job"]["id"] == job["id"] and sent["job"]["status"] == "done"
    finally:
        receiver.close()


def test_webhook_gives_up_after_its_retries_and_says_so(make_app, portrait_path, speech_path):
    receiver = Receiver(fail_first=100)
    try:
        web = make_app(webhook_allow_private=True, webhook_max_retries=2).test_client()
        bearer = {"Authorization": f"Bearer {new_key(web)['key']}"}
        job = generate(web, portrait_path, speech_path, headers=bearer, callback_url=receiver.url).json
        final = wait_until(lambda: (lambda j: j if j["webhook"]["status"] == "failed" else None)(
            web.get(f"/api/jobs/{job['id']}", headers=bearer).json), 30, "the webhook to give up")
        assert final["webhook"]["attempts"] == 3 and "HTTP 500 (tried 3 times)" in final["webhook"]["error"]
        assert len(receiver.received) == 3
    finally:
        receiver.close()


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/x", "must be an http:// or https:// URL"),
    ("http://127.0.0.1:9/hook", "loopback, private or reserved"),
    ("http://localhost/hook", "loopback, private or reserved"),
    ("http://10.1.2.3/hook", "loopback, private or reserved"),
    ("http://[::1]/hook", "loopback, private or reserved"),
    ("http://169.254.169.254/latest/meta-data", "loopback, private or reserved"),
    ("http://user:pw@example.com/", "user name or password"),
])
def test_callback_urls_to_private_addresses_are_refused(app, portrait_path, speech_path, url, message):
    web = app.test_client()
    bearer = {"Authorization": f"Bearer {new_key(web)['key']}"}
    reply = generate(web, portrait_path, speech_path, headers=bearer, callback_url=url)
    assert reply.status_code == 400 and reply.json["field"] == "callback_url" and message in reply.json["error"]


def test_callback_url_needs_an_api_key(app, portrait_path, speech_path):
    reply = generate(app.test_client(), portrait_path, speech_path, callback_url="https://example.com/hook")
    assert reply.status_code == 400 and "need an API key" in reply.json["error"]


def test_cancel_queued_and_running(make_app, portrait_path, speech_path):
    gate = threading.Event()
    fake = FakeModelClient(gate=gate)
    web = make_app(fake, workers=1).test_client()
    try:
        running = generate(web, portrait_path, speech_path).json
        wait_until(fake.started.is_set, 30, "the first job to start")  # else the worker may take the second first
        queued = generate(web, portrait_path, speech_path).json
        reply = web.post(f"/api/jobs/{queued['id']}/cancel")
        assert reply.status_code == 200 and reply.json["status"] == "cancelled"
        reply = web.post(f"/api/jobs/{running['id']}/cancel")
        assert reply.status_code == 202 and reply.json["cancel_requested"] is True
        final = wait_until(lambda: (lambda j: j if j["status"] == "cancelled" else None)(
            web.get(f"/api/jobs/{running['id']}").json), 30, "the running job to stop")
        assert final["error_kind"] == "cancelled" and final["video_url"] is None
        assert len(fake.calls) == 1  # the queued one never reached the model
    finally:
        gate.set()
    done = generate(web, portrait_path, speech_path).json
    wait_until(lambda: web.get(f"/api/jobs/{done['id']}").json["status"] == "done", 30, "a later job")
    assert web.post(f"/api/jobs/{done['id']}/cancel").status_code == 409


def test_the_job_page_has_a_cancel_button_that_cancels(make_app, portrait_path, speech_path):
    gate = threading.Event()
    fake = FakeModelClient(gate=gate)
    web = make_app(fake, workers=1).test_client()
    try:
        generate(web, portrait_path, speech_path)  # holds the one worker once it has started
        wait_until(fake.started.is_set, 30, "the first job to start")  # else the worker may take the second first
        job = generate(web, portrait_path, speech_path).json
        page = web.get(job["page_url"]).get_data(as_text=True)
        assert 'id="cancel-job"' in page
        reply = web.post(f"/jobs/{job['id']}/cancel", data={"csrf_token": csrf_of(web)})
        assert reply.status_code == 303 and reply.headers["Location"].endswith(job["page_url"])
        assert web.get(f"/api/jobs/{job['id']}").json["status"] == "cancelled"
        assert 'id="cancel-job"' not in web.get(job["page_url"]).get_data(as_text=True)
    finally:
        gate.set()


def test_queue_position_and_estimated_start(make_app, portrait_path, speech_path):
    gate = threading.Event()
    fake = FakeModelClient()
    web = make_app(fake, workers=1).test_client()
    first = generate(web, portrait_path, speech_path).json
    assert first["estimated_start_at"] is None or first["status"] != "queued"  # no history yet: no estimate
    wait_until(lambda: web.get(f"/api/jobs/{first['id']}").json["status"] == "done", 30, "a first job")
    fake.gate, fake.started = gate, threading.Event()
    try:
        generate(web, portrait_path, speech_path)  # holds the one worker
        wait_until(fake.started.is_set, 30, "the held job to start")
        second, third = (generate(web, portrait_path, speech_path).json for _ in range(2))
        a, b = (web.get(f"/api/jobs/{j['id']}").json for j in (second, third))
        assert (a["queue_position"], b["queue_position"]) == (1, 2)
        assert a["estimated_start_at"] is not None and b["estimated_start_at"] > a["estimated_start_at"]
    finally:
        gate.set()
