"""Scale-out over real HTTP on loopback: two model service replicas (the real Gradio app with a paced stand-in
engine, tests/deploy/deploy_replica.py), a model worker beside each, one front, one Redis. Jobs spread over both
replicas through the queue; a replica killed while busy has its job retried (a service error) and the job ends
done on the other; /healthz reports the broker and the live workers."""
from __future__ import annotations

import collections
import json
import signal
import urllib.error
import urllib.request

import pytest
from queue_cluster import Cluster, wait_until

from sadtalker.io.audio import load_audio
from sadtalker.io.video import probe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PACE_SECONDS_PER_FRAME = 0.02  # 3 s clip: 75 frames, ~1.5 s per job; the 10 s clip: ~5 s, time to kill it


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    c = Cluster(tmp)
    try:
        for name in ("a", "b"):
            url = c.model(f"replica-{name}", argv=["tests/deploy/deploy_replica.py", "{port}",
                                                   str(PACE_SECONDS_PER_FRAME), str(tmp / f"results-{name}")],
                          ready="health")
            c.worker(f"worker-{name}", url)
        c.front("front")
        yield c
    finally:
        c.close()


def test_healthz_reports_database_broker_and_workers(cluster):
    front = cluster.fronts["front"]
    status, body = _get(front + "/healthz")
    assert status == 200 and body["status"] == "ok", body
    assert body["database"]["ok"] is True and body["queue"] == {"queued": 0, "running": 0}
    assert body["broker"]["ok"] is True and body["broker"]["waiting"] == 0 and body["workers"] == {"live": 2}
    assert _get(front + "/livez") == (200, {"status": "ok"})
    status, replica = _get(cluster.models["replica-a"] + "health")  # the model service's own health route
    assert status == 200 and replica["busy"] is False and replica["checkpoints_loaded"] is False


def test_ten_jobs_spread_over_both_replicas(cluster, portrait_path, speech_path, tmp_path):
    front = cluster.fronts["front"]
    ids = [cluster.post(front, portrait_path, speech_path, seed=i)["id"] for i in range(10)]
    finished = cluster.wait_jobs(front, ids, 180)
    assert [j["status"] for j in finished] == ["done"] * 10, [j["error"] for j in finished]
    assert all(len(j["attempts"]) == 1 and j["attempts"][0]["outcome"] == "done" for j in finished)
    used = collections.Counter(j["attempts"][0]["replica"].split()[0] for j in finished)
    assert set(used) == {"worker-a", "worker-b"} and min(used.values()) >= 3, used  # a free worker pulls
    out = tmp_path / "one.mp4"  # every result is a whole video of the clip's length
    with urllib.request.urlopen(front + finished[0]["video_url"], timeout=30) as reply:
        out.write_bytes(reply.read())
    info = probe(out)
    seconds = len(load_audio(speech_path)) / 16000
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert abs(info.num_frames - round(seconds * 25)) <= 1


def test_a_replica_killed_mid_job_is_retried_and_ends_done_on_the_other(cluster, portrait_path, long_speech_path):
    front = cluster.fronts["front"]
    job = cluster.post(front, portrait_path, long_speech_path, seed=99)

    def busy_replica() -> str | None:
        for name, url in cluster.models.items():
            status, health = _get(url + "health")
            if status == 200 and health["busy"]:
                return name
        return None

    victim = wait_until(busy_replica, 60, "a replica to become busy")
    cluster.kill(victim, signal.SIGKILL)
    done = cluster.wait_jobs(front, [job["id"]], 120)[0]
    assert done["status"] == "done", done["error"]
    survivor = "worker-b" if victim == "replica-a" else "worker-a"
    attempts = done["attempts"]
    assert attempts[-1]["outcome"] == "done" and attempts[-1]["replica"].startswith(survivor), attempts
    assert all(a["outcome"] == "retry" for a in attempts[:-1]) and len(attempts) >= 2, attempts
    assert _get(front + "/healthz")[0] == 200  # a dead model service does not make the front unready
