"""Scale-out over real HTTP on loopback: one front (subprocess) with two model service replicas (subprocesses
running the real Gradio app with a paced stand-in engine). Jobs spread over both; a replica killed while busy
has its job retried on the other and the job ends done with both attempts recorded; /healthz reports the dead
replica, and 503 once none is left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from live_services import free_port, post_job, start, stop, wait_for, wait_job

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


def _post_job(front: str, image: Path, audio: Path) -> dict:
    return post_job(front, {}, {"image": image, "audio": audio})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    replicas: dict[str, subprocess.Popen] = {}
    procs: list[subprocess.Popen] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp / f"replica-{name}.log"
            proc = start(["tests/deploy/deploy_replica.py", str(port), str(PACE_SECONDS_PER_FRAME),
                          str(tmp / f"results-{name}")], env, log)
            procs.append(proc)
            replicas[f"http://127.0.0.1:{port}/"] = proc
        for (url, proc), name in zip(replicas.items(), ("a", "b")):
            wait_for(url + "health", proc, tmp / f"replica-{name}.log")
        front_port = free_port()
        front_env = {**env, "FRONT_PORT": str(front_port), "SADTALKER_URLS": ",".join(replicas),
                     "DATABASE_URL": f"sqlite:///{tmp / 'front.db'}", "DATA_DIR": str(tmp / "data"),
                     "WORKERS": "4", "RATE_LIMIT": "off", "MODEL_RETRIES": "1"}
        front_env.pop("SADTALKER_URL", None)
        log = tmp / "front.log"
        proc = start(["DemoFront/app.py"], front_env, log)
        procs.append(proc)
        front = f"http://127.0.0.1:{front_port}"
        wait_for(front + "/livez", proc, log)
        yield {"front": front, "replicas": replicas, "tmp": tmp}
    finally:
        stop(procs)


def test_healthz_reports_database_queue_and_both_replicas(cluster):
    status, body = _get(cluster["front"] + "/healthz")
    assert status == 200 and body["status"] == "ok", body
    assert body["database"]["ok"] is True and body["queue"] == {"queued": 0, "running": 0}
    assert {r["url"] for r in body["model_replicas"]} == set(cluster["replicas"])
    assert all(r["up"] and r["engine"] == "landmark" and r["device"] == "cpu" for r in body["model_replicas"])
    assert _get(cluster["front"] + "/livez") == (200, {"status": "ok"})
    # the model service's own health route: engine, checkpoints, device, busy/idle
    status, replica = _get(next(iter(cluster["replicas"])) + "health")
    assert status == 200 and replica["busy"] is False and replica["checkpoints_loaded"] is False


def test_ten_jobs_spread_over_both_replicas(cluster, portrait_path, speech_path, tmp_path):
    front = cluster["front"]
    jobs = [_post_job(front, portrait_path, speech_path) for _ in range(10)]
    finished = [wait_job(front, job["id"]) for job in jobs]
    assert [j["status"] for j in finished] == ["done"] * 10, [j["error"] for j in finished]
    used = [j["attempts"][0]["replica"] for j in finished]
    assert all(len(j["attempts"]) == 1 and j["attempts"][0]["outcome"] == "done" for j in finished)
    assert set(used) == set(cluster["replicas"]), used  # both replicas did work
    assert min(used.count(url) for url in cluster["replicas"]) >= 3, used  # least-busy keeps them balanced
    # every result is a whole video of the clip's length
    out = tmp_path / "one.mp4"
    with urllib.request.urlopen(front + finished[0]["video_url"], timeout=30) as reply:
        out.write_bytes(reply.read())
    info = probe(out)
    seconds = len(load_audio(speech_path)) / 16000
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert abs(info.num_frames - round(seconds * 25)) <= 1


def test_a_replica_killed_mid_job_is_retried_on_the_other(cluster, portrait_path, long_speech_path):
    front, replicas = cluster["front"], cluster["replicas"]
    job = _post_job(front, portrait_path, long_speech_path)
    deadline = time.time() + 60
    victim = None
    while victim is None and time.time() < deadline:  # the replica the job went to, once it is rendering
        for url in replicas:
            status, health = _get(url + "health")
            if status == 200 and health["busy"]:
                victim = url
        time.sleep(0.1)
    assert victim is not None, "no replica became busy"
    _, running = _get(f"{front}/api/jobs/{job['id']}")
    assert running["status"] == "running" and running["attempts"][0]["replica"] == victim
    replicas[victim].send_signal(signal.SIGKILL)
    replicas[victim].wait(10)

    done = wait_job(front, job["id"])
    assert done["status"] == "done", done["error"]
    survivor = next(url for url in replicas if url != victim)
    attempts = done["attempts"]
    assert [(a["number"], a["replica"], a["outcome"]) for a in attempts] == [(1, victim, "failed"),
                                                                              (2, survivor, "done")]
    assert victim in attempts[0]["error"]

    status, health = _get(front + "/healthz")
    assert status == 200 and health["models"] == {"up": 1, "total": 2}
    dead = next(r for r in health["model_replicas"] if r["url"] == victim)
    assert dead["up"] is False and "unreachable" in dead["error"]

    # with no replica left, the front is not ready (503) but stays alive, and a new job fails with a clear reason
    replicas[survivor].terminate()
    replicas[survivor].wait(20)
    status, health = _get(front + "/healthz")
    assert status == 503 and health["status"] == "unhealthy" and "no model replica reachable" in health["problems"]
    assert _get(front + "/livez")[0] == 200
    failed = wait_job(front, _post_job(front, portrait_path, long_speech_path)["id"])
    assert failed["status"] == "failed" and "the model service is unreachable at" in failed["error"]
