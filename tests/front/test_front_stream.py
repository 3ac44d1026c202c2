"""GET /api/jobs/<id>/stream with the streaming stand-in (the service's and the front's own streaming code, no
gradio transport): bytes flow while the job runs, the whole body is a valid fragmented H.264/AAC MP4 as long as
the clip, a finished job's stream is the whole file, the result is a plain (faststart) MP4, and a failed job
has no stream."""
from __future__ import annotations

import time

import pytest
from front_support import FakeModelClient, StreamingFakeModelClient, make_config, upload, wait_for_job

from demofront import create_app
from sadtalker.io.video import probe


@pytest.fixture
def stream_app(tmp_path):
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'stream.db'}"),
                     model_client=StreamingFakeModelClient(side=96, fps_pace=100.0, tmp=tmp_path))
    yield app
    app.extensions["demofront"].close()


def test_stream_flows_while_the_job_runs_and_is_a_valid_mp4(stream_app, portrait_path, long_speech_path, tmp_path):
    client = stream_app.test_client()
    reply = client.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(long_speech_path)},
                        content_type="multipart/form-data")
    job = reply.json
    assert job["stream_url"] == f"/api/jobs/{job['id']}/stream"
    stream = client.get(job["stream_url"], buffered=False)
    assert stream.status_code == 200 and stream.mimetype == "video/mp4"
    assert "Content-Length" not in stream.headers  # chunked: the length is not known yet
    body, statuses = bytearray(), []
    for chunk in stream.response:
        if not body:
            statuses.append(client.get(f"/api/jobs/{job['id']}").json["status"])
        body += chunk
    stream.close()
    assert statuses == ["running"], "the first bytes came while the job ran"
    assert body[4:8] == b"ftyp" and b"moof" in body
    done = wait_for_job(client, job["id"])
    assert done["status"] == "done" and done["engine"] == "fake-stream"
    streamed = tmp_path / "streamed.mp4"
    streamed.write_bytes(body)
    info = probe(streamed)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert abs(info.video_seconds - done["audio"]["seconds"]) < 0.2

    whole = client.get(job["stream_url"])  # finished: the whole file at once, with its length
    assert whole.status_code == 200 and whole.data == bytes(body)
    assert int(whole.headers["Content-Length"]) == len(body)
    result = client.get(done["video_url"]).data
    assert result[:64].find(b"moov") != -1 or b"moov" in result[:4096], "the result has its index in front"
    assert b"moof" not in result


def test_failed_job_has_no_stream(tmp_path, no_face_path, speech_path):
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'f.db'}"), model_client=FakeModelClient())
    try:
        client = app.test_client()
        job = client.post("/api/generate", data={"image": upload(no_face_path), "audio": upload(speech_path)},
                          content_type="multipart/form-data").json
        assert wait_for_job(client, job["id"])["status"] == "failed"
        reply = client.get(f"/api/jobs/{job['id']}/stream")
        assert reply.status_code == 409 and "no face" in reply.json["error"]
        assert client.get(f"/api/jobs/{job['id']}").json["stream_url"] is None
    finally:
        app.extensions["demofront"].close()


def test_finished_job_without_a_stream_serves_its_video(tmp_path, portrait_path, speech_path):
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'w.db'}"), model_client=FakeModelClient())
    try:
        client = app.test_client()
        job = client.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path)},
                          content_type="multipart/form-data").json
        done = wait_for_job(client, job["id"])
        reply = client.get(done["stream_url"])
        assert reply.status_code == 200 and reply.data == client.get(done["video_url"]).data
    finally:
        app.extensions["demofront"].close()


def test_preview_needs_a_model_client_that_previews(tmp_path, portrait_path):
    """The fake client cannot preview: 501 (the real path is in tests/service and the browser tests)."""
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'p.db'}"), model_client=FakeModelClient())
    try:
        client = app.test_client()
        assert client.post("/api/preview", data={}, content_type="multipart/form-data").status_code == 400
        reply = client.post("/api/preview", data={"image": upload(portrait_path)}, content_type="multipart/form-data")
        assert reply.status_code == 501
    finally:
        app.extensions["demofront"].close()


def test_growing_streams_hold_at_most_half_the_server_threads(tmp_path, portrait_path, speech_path):
    import threading

    gate = threading.Event()
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", server_threads=4),
                     model_client=FakeModelClient(gate=gate))
    try:
        client = app.test_client()
        job = client.post("/api/generate", data={"image": upload(portrait_path), "audio": upload(speech_path)},
                          content_type="multipart/form-data").json
        slots = app.extensions["demofront_stream_slots"]
        assert slots.acquire(blocking=False) and slots.acquire(blocking=False)  # two streams (4 threads / 2)
        assert not slots.acquire(blocking=False)
        refused = client.get(job["stream_url"])  # the job runs: its stream would hold a thread
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "10"
        slots.release()
        slots.release()
        gate.set()
        assert wait_for_job(client, job["id"])["status"] == "done"
        assert client.get(job["stream_url"]).status_code == 200  # a finished job's file takes no slot
        assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
    finally:
        gate.set()
        app.extensions["demofront"].close()
