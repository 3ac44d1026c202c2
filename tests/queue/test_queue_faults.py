"""The task queue under faults, with real processes (Redis, stand-in model services, workers, fronts): a worker
killed mid-job, a model service down for 15 s, a front stopped with SIGTERM, two fronts and two workers on one
Redis, cancel. Every wait polls for a condition with a deadline (cluster.wait_until)."""
from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import pytest

from queue_cluster import Cluster, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def job_dir_videos(cluster: Cluster, job_id: str) -> list[str]:
    return sorted(p.name for p in (cluster.tmp / "data" / "jobs" / job_id).glob("*.mp4"))


def test_a_worker_killed_mid_job_is_redelivered_and_the_job_ends_done_once(cluster, portrait_path, speech_path):
    model = cluster.model("model", FAKE_SECONDS="6", FAKE_STEPS="12")
    cluster.worker("worker-a", model)
    front = cluster.front("front")
    job = cluster.post(front, portrait_path, speech_path, seed=101)
    wait_until(lambda: (lambda j: j["status"] == "running" and j["progress"] > 0)(cluster.job(front, job["id"])),
               60, "the job to render on worker-a")
    cluster.kill("worker-a")  # SIGKILL: no goodbye, the message stays unacknowledged in Redis
    cluster.worker("worker-b", model)
    done = cluster.wait_jobs(front, [job["id"]], 90)[0]
    assert done["status"] == "done" and done["error"] is None, done
    attempts = done["attempts"]
    assert done["attempt_count"] == len(attempts) >= 2
    assert (attempts[0]["outcome"], attempts[-1]["outcome"]) == ("lost", "done"), attempts
    # between them only retries (e.g. Gradio dropped the upload it shared with the dead worker's session)
    assert all(a["outcome"] == "retry" for a in attempts[1:-1]), attempts
    assert attempts[0]["replica"].startswith("worker-a") and attempts[-1]["replica"].startswith("worker-b")
    assert job_dir_videos(cluster, job["id"]) == ["result.mp4"]  # exactly one video, no leftovers


def test_model_service_down_for_15_s_with_6_jobs_queued_all_end_done(cluster, portrait_path, speech_path):
    from live_services import free_port

    port = free_port()
    model = cluster.model("model", port=port, FAKE_SECONDS="0.5")
    cluster.worker("worker", model)
    front = cluster.front("front")
    cluster.kill("model")
    down_at = time.monotonic()
    ids = [cluster.post(front, portrait_path, speech_path, seed=200 + i)["id"] for i in range(6)]
    # the outage lasts 15 s (the fault itself, not a wait for anything); the front answers all along
    while time.monotonic() - down_at < 15:
        assert cluster.call(front, "/livez", method="GET")[0] == 200
        assert all(cluster.job(front, i)["status"] in ("queued", "running") for i in ids)
        time.sleep(1)
    cluster.model("model", port=port, FAKE_SECONDS="0.5")
    jobs = cluster.wait_jobs(front, ids, 120)
    assert [j["status"] for j in jobs] == ["done"] * 6, [(j["status"], j["error"]) for j in jobs]
    assert any(a["outcome"] == "retry" and "unreachable" in (a["error"] or "") for j in jobs for a in j["attempts"])


def test_a_front_stopped_with_sigterm_loses_nothing(cluster, portrait_path, speech_path):
    model = cluster.model("model", FAKE_SECONDS="1.5")
    cluster.worker("worker", model)
    front = cluster.front("front")
    ids = [cluster.post(front, portrait_path, speech_path, seed=300 + i)["id"] for i in range(4)]
    wait_until(lambda: cluster.job(front, ids[0])["status"] == "running", 60, "the first job to run")
    cluster.kill("front", signal.SIGTERM)
    assert cluster.procs["front"].returncode == 0, cluster.log("front")
    front = cluster.front("front-again")
    jobs = cluster.wait_jobs(front, ids, 120)
    for job in jobs:
        assert job["status"] == "done" and job["error"] is None, job
        assert job["attempt_count"] == 1


def test_two_fronts_two_workers_spread_jobs_none_lost_none_twice(cluster, portrait_path, speech_path):
    count = 40
    models = [cluster.model(f"model-{n}", FAKE_SECONDS="0.6", FAKE_STEPS="2") for n in ("a", "b")]
    for n, model in zip(("a", "b"), models):
        cluster.worker(f"worker-{n}", model)
    fronts = [cluster.front("front-a"), cluster.front("front-b")]
    ids = [cluster.post(fronts[i % 2], portrait_path, speech_path, seed=1000 + i)["id"] for i in range(count)]
    jobs = cluster.wait_jobs(fronts[0], ids, 300)
    assert [j["status"] for j in jobs] == ["done"] * count
    assert all(j["attempt_count"] == 1 for j in jobs)
    runs = collections.Counter(a["replica"].split()[0] for j in jobs for a in j["attempts"])
    assert set(runs) == {"worker-a", "worker-b"} and min(runs.values()) >= count // 4, runs
    done = collections.Counter(seed for what, seed in cluster.model_calls() if what == "done")
    assert sorted(done) == list(range(1000, 1000 + count)) and set(done.values()) == {1}, done


def test_cancel_a_queued_job_and_a_running_one(cluster, portrait_path, speech_path):
    model = cluster.model("model", FAKE_SECONDS="8", FAKE_STEPS="16")
    cluster.worker("worker", model)
    front = cluster.front("front")
    running = cluster.post(front, portrait_path, speech_path, seed=501)
    queued = cluster.post(front, portrait_path, speech_path, seed=502)
    wait_until(lambda: cluster.job(front, running["id"])["progress"] > 0, 60, "the first job to render")
    status, body = cluster.call(front, f"/api/jobs/{queued['id']}/cancel")
    assert status == 200 and body["status"] == "cancelled"
    status, body = cluster.call(front, f"/api/jobs/{running['id']}/cancel")
    assert status == 202 and body["cancel_requested"] is True
    ended = cluster.wait_jobs(front, [running["id"], queued["id"]], 30)
    assert [j["status"] for j in ended] == ["cancelled", "cancelled"]
    assert ended[0]["attempts"][-1]["outcome"] == "cancelled"
    assert job_dir_videos(cluster, running["id"]) == []
    assert [s for what, s in cluster.model_calls() if what == "start"] == [501]  # the queued one never ran
    status, _ = cluster.call(front, f"/api/jobs/{running['id']}/cancel")
    assert status == 200  # cancelling again is harmless


def test_a_worker_stopped_with_sigterm_finishes_its_job_then_exits(cluster, portrait_path, speech_path):
    model = cluster.model("model", FAKE_SECONDS="4", FAKE_STEPS="8")
    cluster.worker("worker", model)
    front = cluster.front("front")
    running = cluster.post(front, portrait_path, speech_path, seed=701)
    waiting = cluster.post(front, portrait_path, speech_path, seed=702)
    wait_until(lambda: cluster.job(front, running["id"])["progress"] > 0, 60, "the job to render")
    cluster.kill("worker", signal.SIGTERM)  # returns once the process has exited
    assert cluster.procs["worker"].returncode == 0, cluster.log("worker")
    done = cluster.job(front, running["id"])
    assert done["status"] == "done" and done["attempt_count"] == 1, done
    assert cluster.job(front, waiting["id"])["status"] == "queued"  # not taken by a worker that is stopping
    cluster.worker("worker-2", model)
    assert cluster.wait_jobs(front, [waiting["id"]], 60)[0]["status"] == "done"


def test_webhook_sent_by_a_front_when_a_worker_ends_the_job(tmp_path, portrait_path, speech_path):
    """The real path: the worker ends the job and queues its webhook; a front delivers it, signed."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from demofront.auth import hash_key
    from demofront.db import Database
    from demofront.models import ApiKey, User
    from demofront.webhooks import SIGNATURE_HEADER, verify

    got: list[tuple[str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append((self.headers[SIGNATURE_HEADER], self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(503 if len(got) == 1 else 204)  # the first try fails: retried
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cluster = Cluster(tmp_path, WEBHOOK_ALLOW_PRIVATE="true")
    try:
        db = Database(cluster.env["DATABASE_URL"])
        db.upgrade()
        key, secret = "tk_queue-test-key", "whsec_queue-test"
        with db.session() as s:
            user = User(username="hooks", password_hash="-")
            s.add(user)
            s.flush()
            s.add(ApiKey(user_id=user.id, name="k", prefix=key[:12], key_hash=hash_key(key), webhook_secret=secret))
        db.dispose()
        model = cluster.model("model", FAKE_SECONDS="0.5")
        cluster.worker("worker", model)
        front = cluster.front("front")
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job = cluster.post(front, portrait_path, speech_path, seed=801, headers={"Authorization": f"Bearer {key}"},
                           callback_url=hook)
        ended = wait_until(lambda: (lambda j: j if j["webhook"]["status"] == "delivered" else None)(
            cluster.call(front, f"/api/jobs/{job['id']}", method="GET",
                         headers={"Authorization": f"Bearer {key}"})[1]), 60, "the webhook")
        assert ended["status"] == "done" and ended["webhook"]["attempts"] == 2 and len(got) == 2
        signature, body = got[-1]
        assert verify(secret, signature, body) and json.loads(body)["job"]["status"] == "done"
    finally:
        cluster.close()
        server.shutdown()
