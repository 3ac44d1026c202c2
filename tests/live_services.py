"""Running the services for real on loopback, shared by the end-to-end tests and scripts/load_check.py: free
ports, subprocesses started and stopped as a user runs them, readiness polling, an in-thread uvicorn server for
an app built in the test process, and a multipart body for POST /api/generate."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll until `url` answers (readiness), failing early with the log's tail if the process died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def start(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """A Python entry point of the repo (e.g. ["SadTalker/app.py"]) as a subprocess, output into `log`."""
    return subprocess.Popen([sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=ROOT, env=dict(env),
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM all (they shut down in parallel), then wait; kill what does not stop in 20 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def product_env(tmp: Path, model_port: int, front_port: int, **extra: str) -> dict[str, str]:
    """Environment for the model service (no checkpoints: the landmark engine) and the front, all state in `tmp`.
    The queue is in the front's process (QUEUE_URL=memory://); tests/queue runs Redis and model workers."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "SADTALKER_PORT": str(model_port), "SADTALKER_CHECKPOINTS": str(tmp / "no-checkpoints"),
            "SADTALKER_RESULTS": str(tmp / "results"), "FRONT_PORT": str(front_port),
            "SADTALKER_URL": f"http://127.0.0.1:{model_port}/", "DATABASE_URL": f"sqlite:///{tmp / 'front.db'}",
            "DATA_DIR": str(tmp / "data"), "QUEUE_URL": "memory://", **extra}  # jobs run inside the front


def start_product(tmp: Path, procs: list[subprocess.Popen], front_ready: str = "/", **extra: str
                  ) -> tuple[str, str]:
    """`python SadTalker/app.py` then `python DemoFront/app.py`, each waited for; the processes are appended to
    `procs` as they start (the caller stops them). Returns (model URL, front URL)."""
    model_port, front_port = free_port(), free_port()
    env = product_env(tmp, model_port, front_port, **extra)
    model, front = f"http://127.0.0.1:{model_port}/", f"http://127.0.0.1:{front_port}"
    for name, script, url in (("model", "SadTalker/app.py", model + "health"),
                              ("front", "DemoFront/app.py", front + front_ready)):
        log = tmp / f"{name}.log"
        procs.append(start([script], env, log))
        wait_for(url, procs[-1], log)
    return model, front


@contextlib.contextmanager
def running_product(tmp: Path, front_ready: str = "/", **extra: str) -> Iterator[tuple[str, str]]:
    """`start_product` for a `with` block: yields (model URL, front URL) and stops both services on leaving,
    also when the second one fails to start."""
    procs: list[subprocess.Popen] = []
    try:
        yield start_product(tmp, procs, front_ready, **extra)
    finally:
        stop(procs)


@contextlib.contextmanager
def serve_in_thread(app: object, port: int) -> Iterator[str]:
    """An ASGI app (e.g. the model service's Gradio app) on 127.0.0.1:`port` in a daemon thread; yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the in-thread server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


def multipart(fields: Mapping[str, str], files: Mapping[str, Path]) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data request."""
    boundary = "----live-services-7c1f"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post_job(front: str, fields: Mapping[str, str], files: Mapping[str, Path]) -> dict:
    """POST /api/generate; asserts the 202 and returns the job's JSON."""
    import json

    body, content_type = multipart(fields, files)
    request = urllib.request.Request(front + "/api/generate", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 202
        return json.load(reply)


def wait_job(front: str, job_id: str, timeout: float = 120, poll_seconds: float = 0.2) -> dict:
    """Poll GET /api/jobs/<id> as a client does until the job is done or failed; returns its JSON."""
    import json

    deadline = time.time() + timeout
    while True:
        with urllib.request.urlopen(f"{front}/api/jobs/{job_id}", timeout=30) as reply:
            job = json.load(reply)
        if job["status"] in ("done", "failed"):
            return job
        if time.time() > deadline:
            raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")
        time.sleep(poll_seconds)  # a client's polling interval
