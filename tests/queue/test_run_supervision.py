"""`make run` (scripts/run.sh) for real: it starts Redis, the model service (no checkpoints: the landmark engine),
a worker and the front; a model service or worker killed with SIGKILL is started again while the front stays up
(the same process answering throughout), and a job sent while the model service is down ends done."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from live_services import ROOT, free_port
from queue_cluster import Cluster, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def children(pid: int) -> dict[str, int]:
    """run.sh's processes by role, from their command lines."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    roles = {}
    for child in map(int, out):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for role, marker in (("redis", "redis-server"), ("model", "SadTalker/app.py"),
                             ("worker", "DemoFront/worker.py"), ("front", "DemoFront/app.py")):
            if marker in cmdline:
                roles[role] = child
    return roles


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def test_run_sh_restarts_the_model_service_and_the_worker_and_the_front_stays_up(tmp_path, portrait_path,
                                                                                speech_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    model_port, front_port, redis_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PY": sys.executable, "RUN_STATE_DIR": str(tmp_path / "state"),
           "REDIS_PORT": str(redis_port), "SADTALKER_PORT": str(model_port), "FRONT_PORT": str(front_port),
           "SADTALKER_CHECKPOINTS": str(tmp_path / "no-checkpoints"), "SADTALKER_RESULTS": str(tmp_path / "results"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'front.db'}", "DATA_DIR": str(tmp_path / "data"),
           "QUEUE_HEARTBEAT_SECONDS": "2", "QUEUE_MAINTENANCE_CHANCE": "1000000", "QUEUE_MIN_BACKOFF_SECONDS": "1",
           "QUEUE_MAX_BACKOFF_SECONDS": "4", "QUEUE_MAX_RETRIES": "40", "GRADIO_ANALYTICS_ENABLED": "False"}
    for name in ("QUEUE_URL", "REDIS_URL", "SADTALKER_URL"):
        env.pop(name, None)
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    front, model = f"http://127.0.0.1:{front_port}", f"http://127.0.0.1:{model_port}/"
    api = Cluster.__new__(Cluster)  # only its HTTP helpers
    try:
        wait_until(lambda: answers(front + "/livez") and answers(model + "health"), 300, "make run to come up",
                   poll=0.5)
        first = children(run.pid)
        assert set(first) == {"redis", "model", "worker", "front"}, first
        job = api.post(front, portrait_path, speech_path, seed=1)
        assert api.wait_jobs(front, [job["id"]], 300)[0]["status"] == "done"

        os.kill(first["model"], signal.SIGKILL)
        wait_until(lambda: not answers(model + "health"), 30, "the model service to go away")
        during = api.post(front, portrait_path, speech_path, seed=2)  # sent while it is down
        wait_until(lambda: children(run.pid).get("model") not in (None, first["model"]), 60,
                   "run.sh to start the model service again")
        os.kill(first["worker"], signal.SIGKILL)
        wait_until(lambda: children(run.pid).get("worker") not in (None, first["worker"]), 60,
                   "run.sh to start the worker again")
        ended = api.wait_jobs(front, [during["id"]], 300)[0]
        assert ended["status"] == "done", ended
        assert answers(front + "/livez") and children(run.pid)["front"] == first["front"]  # never restarted
    finally:
        run.terminate()  # run.sh's trap stops its processes
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
        log.close()
    wait_until(lambda: not children(run.pid), 30, "run.sh's processes to stop")
    text = (tmp_path / "run.log").read_text()
    assert "run.sh: model exited" in text and "run.sh: worker exited" in text and "run.sh: front exited" not in text
