"""The front as it is deployed: `python DemoFront/app.py` (what `make run` and the Docker image start) serves with
waitress, not Werkzeug's development server; a connection that sends half a request header is closed after
READ_TIMEOUT_SECONDS without holding a request thread; a job is dispatched once; SIGTERM stops it cleanly."""
from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request

import pytest
from live_services import free_port, multipart, start, stop, wait_for

pytestmark = pytest.mark.slow
READ_TIMEOUT = 2


@pytest.fixture
def served_front(tmp_path):
    port, dead_model = free_port(), free_port()  # nothing listens on the model port: jobs fail fast
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FRONT_PORT": str(port), "DATA_DIR": str(tmp_path / "data"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'front.db'}", "SADTALKER_URL": f"http://127.0.0.1:{dead_model}/",
           "QUEUE_URL": "memory://", "QUEUE_MAX_RETRIES": "0", "SERVER_THREADS": "1", "READ_TIMEOUT_SECONDS": str(READ_TIMEOUT)}
    log = tmp_path / "front.log"
    proc = start(["DemoFront/app.py"], env, log)
    try:
        wait_for(f"http://127.0.0.1:{port}/livez", proc, log)
        yield {"port": port, "url": f"http://127.0.0.1:{port}", "proc": proc, "log": log}
    finally:
        stop([proc])


def test_served_by_waitress_not_the_development_server(served_front):
    with urllib.request.urlopen(served_front["url"] + "/livez", timeout=10) as reply:
        assert reply.status == 200 and reply.headers["Server"] == "waitress"
        assert "Werkzeug" not in str(reply.headers)


def test_a_half_sent_header_is_closed_after_the_read_timeout_without_holding_a_thread(served_front):
    with socket.create_connection(("127.0.0.1", served_front["port"]), timeout=30) as slow:
        slow.sendall(b"GET /livez HTTP/1.1\r\nHost: front\r\nX-Half: ")  # ... and nothing more
        started = time.monotonic()
        # SERVER_THREADS=1: the slow client holds a socket, not the only request thread
        with urllib.request.urlopen(served_front["url"] + "/livez", timeout=5) as reply:
            assert reply.status == 200
        assert slow.recv(1024) == b""  # blocks until the server closes the connection
        waited = time.monotonic() - started
    print(f"\nhalf-sent header closed after {waited:.1f} s (READ_TIMEOUT_SECONDS={READ_TIMEOUT})")
    assert READ_TIMEOUT - 0.5 <= waited <= READ_TIMEOUT + 5


def test_a_job_is_dispatched_once_and_sigterm_stops_cleanly(served_front, portrait_path, speech_path):
    body, content_type = multipart({}, {"image": portrait_path, "audio": speech_path})
    request = urllib.request.Request(served_front["url"] + "/api/generate?wait=true", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        urllib.request.urlopen(request, timeout=60)
        raise AssertionError("the job should fail: no model service is listening")
    except urllib.error.HTTPError as exc:
        assert exc.code == 502
        job = json.load(exc)["job"]
    assert job["status"] == "failed" and "unreachable" in job["error"]
    served_front["proc"].terminate()
    assert served_front["proc"].wait(20) == 0
    log = served_front["log"].read_text()
    assert log.count(f"job {job['id']} failed") == 1, log[-2000:]  # one runner, one dispatch
    assert "waitress" in log and "Traceback" not in log
