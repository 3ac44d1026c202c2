"""Real processes for the task-queue tests: a Redis server, model services (the stand-in
tests/queue/fake_model_service.py, or any script given), model workers (DemoFront/worker.py) and fronts (DemoFront/app.py), all on loopback with their state in one folder, and
polling helpers (every wait is for a condition, with a deadline)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from live_services import ROOT, free_port, multipart


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll `condition` until it returns something true (returned), or fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


class Cluster:
    def __init__(self, tmp: Path, **settings: str) -> None:
        if shutil.which("redis-server") is None:
            import pytest

            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.fake_log = tmp / "model-calls.log"
        self.fake_log.touch()
        self.redis_port = free_port()
        self.procs["redis"] = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "", "--appendonly",
             "no", "--dir", str(tmp)], stdout=(tmp / "redis.log").open("w"), stderr=subprocess.STDOUT)
        import redis

        self.redis = redis.Redis(port=self.redis_port)
        wait_until(self._redis_up, 20, "redis-server")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                    "DATABASE_URL": f"sqlite:///{tmp / 'front.db'}", "DATA_DIR": str(tmp / "data"),
                    "QUEUE_URL": f"redis://127.0.0.1:{self.redis_port}/0", "QUEUE_HEARTBEAT_SECONDS": "2",
                    "QUEUE_MAINTENANCE_CHANCE": "1000000", "QUEUE_MIN_BACKOFF_SECONDS": "0.5",
                    "QUEUE_MAX_BACKOFF_SECONDS": "3", "QUEUE_MAX_RETRIES": "30", "MODEL_TIMEOUT_SECONDS": "120",
                    "RATE_LIMIT": "1000/minute", "MAX_QUEUED_PER_ACCOUNT": "0", "MAX_QUEUED_JOBS": "0",
                    "SECRET_KEY": "queue-tests", "FAKE_LOG": str(self.fake_log), "FAKE_OUT": str(tmp / "fake"),
                    **settings}
        self.fronts: dict[str, str] = {}
        self.models: dict[str, str] = {}

    def _redis_up(self) -> bool:
        import redis

        try:
            return bool(self.redis.ping())
        except redis.ConnectionError:
            return False

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("a")
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-4000:]

    def _ready(self, name: str, url: str, timeout: float = 120) -> None:
        proc = self.procs[name]

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until(answers, timeout, f"{name} at {url}", poll=0.2)

    # -- processes ---------------------------------------------------------------------------------------------

    def model(self, name: str, port: int | None = None, argv: list[str] | None = None, ready: str = "config",
              **env: str) -> str:
        """A model service on `port`: the stand-in by default, else `argv` with {port} filled in."""
        port = port or free_port()
        fake = [str(Path(__file__).parent / "queue" / "fake_model_service.py"), "{port}"]
        self._start(name, [a.format(port=port) for a in argv or fake], {**self.env, **env})
        url = f"http://127.0.0.1:{port}/"
        self._ready(name, url + ready)
        self.models[name] = url
        return url

    def worker(self, name: str, model_url: str, wait: bool = True) -> subprocess.Popen:
        proc = self._start(name, ["DemoFront/worker.py"], {**self.env, "WORKER_NAME": name,
                                                           "SADTALKER_URL": model_url})
        if wait:
            key = f"dramatiq:demofront:worker:{name}"

            def registered() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
                return bool(self.redis.exists(key))

            wait_until(registered, 60, f"worker {name} to register")
        return proc

    def front(self, name: str, port: int | None = None) -> str:
        port = port or free_port()
        self._start(name, ["DemoFront/app.py"], {**self.env, "FRONT_PORT": str(port)})
        url = f"http://127.0.0.1:{port}"
        self._ready(name, url + "/livez")
        self.fronts[name] = url
        return url

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(30)

    def close(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None and name != "redis":
                proc.terminate()
        for name, proc in self.procs.items():
            if name == "redis":
                continue
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs["redis"].terminate()
        self.procs["redis"].wait(10)

    # -- the API -----------------------------------------------------------------------------------------------

    def post(self, front: str, portrait: Path, speech: Path, seed: int, headers: dict[str, str] | None = None,
             **fields: str) -> dict:
        body, content_type = multipart({"seed": str(seed), **fields}, {"image": portrait, "audio": speech})
        request = urllib.request.Request(front + "/api/generate", data=body, method="POST",
                                         headers={"Content-Type": content_type, **(headers or {})})
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.status == 202
            return json.load(reply)

    def job(self, front: str, job_id: str) -> dict:
        with urllib.request.urlopen(f"{front}/api/jobs/{job_id}", timeout=30) as reply:
            return json.load(reply)

    def call(self, front: str, path: str, method: str = "POST", headers: dict[str, str] | None = None,
             body: bytes | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(front + path, method=method, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def wait_jobs(self, front: str, ids: list[str], timeout: float) -> list[dict]:
        final = ("done", "failed", "cancelled")
        jobs: dict[str, dict] = {}

        def all_ended() -> bool:
            for job_id in ids:
                if job_id not in jobs or jobs[job_id]["status"] not in final:
                    jobs[job_id] = self.job(front, job_id)
            return all(j["status"] in final for j in jobs.values()) and len(jobs) == len(ids)

        wait_until(all_ended, timeout, f"{len(ids)} jobs to end", poll=0.3)
        return [jobs[i] for i in ids]

    def model_calls(self) -> list[tuple[str, int]]:
        lines = self.fake_log.read_text().split()
        return [(lines[i], int(lines[i + 1])) for i in range(0, len(lines), 3)]
