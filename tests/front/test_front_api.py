"""The JSON API with a fake model client: generate, status, video with Range, errors, ownership, keys, limits.
Runs on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL."""
from __future__ import annotations

import threading
import time

import pytest
from front_support import (  # noqa: F401
    FakeModelClient,
    api_key_for,
    app,
    client,
    csrf_of,
    db_kind,
    make_app,
    sign_up,
    upload,
    wait_for_job,
)

from sadtalker.io.video import probe


def generate(client, portrait_path, speech_path, query: str = "", headers=None, **fields):
    data = {"image": upload(portrait_path), "audio": upload(speech_path), **fields}
    return client.post(f"/api/generate{query}", data=data, headers=headers or {},
                       content_type="multipart/form-data")


def test_generate_records_the_job_and_serves_the_video(app, client, portrait_path, speech_path):
    reply = generate(client, portrait_path, speech_path, headers={"User-Agent": "pytest-agent"},
                     preprocess="full", still_mode="true", pose_style="7", size="512")
    assert reply.status_code == 202, reply.json
    job = reply.json
    assert job["status"] in ("queued", "running") and job["status_url"] == f"/api/jobs/{job['id']}"
    assert reply.headers["Location"] == job["status_url"]
    assert len(job["id"]) == 32 and job["video_url"] is None
    done = wait_for_job(client, job["id"])
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and done["engine"] == "fake" and done["error"] is None
    assert done["options"] == {"preprocess": "full", "still_mode": True, "enhancer": False, "batch_size": 2,
                               "size": 512, "pose_style": 7, "expression_scale": 1.0, "seed": 0, "engine": "auto"}
    assert done["image"]["name"] == "astronaut.png" and done["image"]["format"] == "PNG"
    assert done["image"]["size"] == portrait_path.stat().st_size and len(done["image"]["sha256"]) == 64
    assert 1.5 < done["audio"]["seconds"] < 6 and done["audio"]["source"] == "upload"
    assert done["timings"]["generation_seconds"] > 0 and done["timings"]["total_seconds"] >= 0
    assert done["created_at"].endswith("Z") and done["finished_at"] >= done["started_at"] >= done["created_at"]

    front = app.extensions["demofront"]
    from demofront.models import Job

    with front.db.session() as s:
        row = s.get(Job, job["id"])
    assert row.user_agent == "pytest-agent" and row.client_addr == "127.0.0.1"
    assert row.image_path == f"jobs/{job['id']}/image.png" and row.audio_path == f"jobs/{job['id']}/audio.wav"
    assert row.output_path == f"jobs/{job['id']}/result.mp4" and row.output_size > 1000

    video = client.get(done["video_url"])
    assert video.status_code == 200 and video.mimetype == "video/mp4"
    assert video.headers["Accept-Ranges"] == "bytes"
    body = video.data
    part = client.get(done["video_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == body[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    tail = client.get(done["video_url"], headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.data == body[-50:]
    out = front.storage.absolute(row.output_path)
    info = probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.num_frames > 25
    download = client.get(done["video_url"] + "?download=1")
    assert "attachment" in download.headers["Content-Disposition"]
    assert client.get(f"/api/jobs/{job['id']}/image").data == portrait_path.read_bytes()


def test_wait_returns_the_mp4(client, portrait_path, speech_path):
    reply = generate(client, portrait_path, speech_path, query="?wait=true")
    assert reply.status_code == 200 and reply.mimetype == "video/mp4"
    assert reply.data[4:8] == b"ftyp"


def test_wait_reports_a_refused_input_as_422(make_app, portrait_path, speech_path):
    client = make_app(FakeModelClient(mode="noface")).test_client()
    reply = generate(client, portrait_path, speech_path, query="?wait=true")
    assert reply.status_code == 422 and reply.json["error"] == "no face found in the image"
    assert reply.json["job"]["status"] == "failed"


def test_no_face_fails_the_job_with_the_reason(make_app, portrait_path, speech_path):
    client = make_app(FakeModelClient(mode="noface")).test_client()
    job = generate(client, portrait_path, speech_path).json
    done = wait_for_job(client, job["id"])
    assert done["status"] == "failed" and done["error"] == "no face found in the image"
    assert done["error_kind"] == "input" and done["video_url"] is None
    assert client.get(f"/api/jobs/{job['id']}/video").status_code == 409


def test_model_service_down_fails_the_job_and_the_front_stays_up(make_app, portrait_path, speech_path):
    """The real ModelClient against a port nobody listens on: retried (QUEUE_MAX_RETRIES, 1 here), then failed."""
    import socket

    from demofront.model_client import ModelClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    client = make_app(ModelClient(url)).test_client()
    job = generate(client, portrait_path, speech_path).json
    done = wait_for_job(client, job["id"])
    assert done["status"] == "failed" and done["error_kind"] == "service"
    assert f"the model service is unreachable at {url}" in done["error"]
    assert client.get("/api/health").status_code == 200
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("field, content, message", [
    ("image", b"this is text", "image: the file is not an image"),
    ("audio", b"this is not audio at all" * 10, "audio: could not read the audio file"),
])
def test_bad_upload_is_400_naming_the_field(client, portrait_path, speech_path, tmp_path, field, content, message):
    bad = tmp_path / ("face.png" if field == "image" else "speech.wav")
    bad.write_bytes(content)
    paths = {"image": portrait_path, "audio": speech_path, field: bad}
    reply = generate(client, paths["image"], paths["audio"])
    assert reply.status_code == 400 and reply.is_json
    assert reply.json["field"] == field and reply.json["error"].startswith(message), reply.json


def test_missing_inputs_and_bad_options(client, portrait_path, speech_path):
    reply = client.post("/api/generate", data={"audio": upload(speech_path)})
    assert reply.status_code == 400 and reply.json["field"] == "image"
    reply = client.post("/api/generate", data={"image": upload(portrait_path)})
    assert reply.status_code == 400 and reply.json["field"] == "audio"
    reply = generate(client, portrait_path, speech_path, size="1024")
    assert reply.status_code == 400 and reply.json["field"] == "size" and "256 or 512" in reply.json["error"]
    reply = generate(client, portrait_path, speech_path, text="also this")
    assert reply.status_code == 400 and "not both" in reply.json["error"]


def test_audio_longer_than_the_limit_is_400(make_app, portrait_path, long_speech_path):
    client = make_app(max_audio_seconds=5).test_client()
    reply = generate(client, portrait_path, long_speech_path)
    assert reply.status_code == 400 and reply.json["field"] == "audio"
    assert "too long" in reply.json["error"] and "the limit is 5 s" in reply.json["error"]


def test_upload_over_the_limit_is_413_json(make_app, portrait_path, speech_path):
    client = make_app(max_upload_mb=0.05).test_client()
    reply = generate(client, portrait_path, speech_path)
    assert reply.status_code == 413 and reply.is_json and "too large" in reply.json["error"]
    front = client.application.extensions["demofront"]
    assert not any(front.storage.root.joinpath("jobs").iterdir())


def test_uploaded_names_never_become_paths(app, client, portrait_path, speech_path):
    reply = client.post("/api/generate", data={"image": upload(portrait_path, "../../../etc/evil.sh"),
                                               "audio": upload(speech_path, "..\\..\\boot.ini")})
    assert reply.status_code == 202
    job = reply.json
    assert job["image"]["name"] == "evil.sh" and job["audio"]["name"].endswith("boot.ini")
    assert "/" not in job["audio"]["name"] and "\\" not in job["audio"]["name"]
    root = app.extensions["demofront"].storage.root
    names = sorted(p.name for p in (root / "jobs" / job["id"]).iterdir())
    assert set(names) <= {"image.png", "audio.wav", "result.mp4", "thumb.jpg"}
    assert not list(root.parent.rglob("evil.sh")) and not list(root.parent.rglob("boot.ini"))


def test_text_to_speech_instead_of_audio(client, portrait_path):
    reply = client.post("/api/generate", data={"image": upload(portrait_path), "text": "Hello from the front.",
                                               "language": "en-us", "voice": "f3"})
    assert reply.status_code == 202, reply.json
    job = wait_for_job(client, reply.json["id"])
    assert job["status"] == "done"
    assert job["audio"]["source"] == "tts" and job["audio"]["text"] == "Hello from the front."
    assert job["audio"]["language"] == "en-us" and job["audio"]["voice"] == "f3" and job["audio"]["seconds"] > 0.5
    assert client.get(job["audio_url"]).data[:4] == b"RIFF"


def test_text_errors(make_app, portrait_path):
    client = make_app(max_text_chars=20).test_client()
    reply = client.post("/api/generate", data={"image": upload(portrait_path), "text": "   "})
    assert reply.status_code == 400 and reply.json["field"] == "text" and "empty" in reply.json["error"]
    reply = client.post("/api/generate", data={"image": upload(portrait_path), "text": "x" * 21})
    assert reply.status_code == 400 and "too long (21 characters; the limit is 20)" in reply.json["error"]


def test_rate_limit_is_429_with_retry_after(make_app, portrait_path, speech_path):
    client = make_app(rate_limit="2/minute").test_client()
    for _ in range(2):
        assert generate(client, portrait_path, speech_path).status_code == 202
    reply = generate(client, portrait_path, speech_path)
    assert reply.status_code == 429 and reply.is_json and "rate limit" in reply.json["error"]
    assert 1 <= int(reply.headers["Retry-After"]) <= 60
    # another user has their own allowance
    other = client.application.test_client()
    key = api_key_for(other, "someone")
    assert generate(other, portrait_path, speech_path, headers={"Authorization": f"Bearer {key}"}).status_code == 202


def test_ownership(app, portrait_path, speech_path):
    alice, bob = app.test_client(), app.test_client()
    alice_key, bob_key = api_key_for(alice, "alice"), api_key_for(bob, "bob")
    a = {"Authorization": f"Bearer {alice_key}"}
    b = {"Authorization": f"Bearer {bob_key}"}
    job = generate(alice, portrait_path, speech_path, headers=a).json
    assert job["owned"] is True
    assert wait_for_job(alice, job["id"], headers=a)["status"] == "done"
    anonymous = app.test_client()
    for who, headers in ((bob, b), (anonymous, {})):
        for path in ("", "/video", "/image", "/audio", "/thumb"):
            reply = who.get(f"/api/jobs/{job['id']}{path}", headers=headers)
            assert reply.status_code == 404 and reply.is_json, (path, reply.status_code)
        assert who.delete(f"/api/jobs/{job['id']}", headers=headers).status_code == 404
        assert who.get(f"/jobs/{job['id']}", headers=headers).status_code == 404
    listed = alice.get("/api/jobs", headers=a).json
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["total"] == 1
    assert bob.get("/api/jobs", headers=b).json["total"] == 0
    # deleting removes the row and the files
    folder = app.extensions["demofront"].storage.job_dir(job["id"])
    assert folder.is_dir()
    assert alice.delete(f"/api/jobs/{job['id']}", headers=a).status_code == 200
    assert not folder.exists()
    assert alice.get(f"/api/jobs/{job['id']}", headers=a).status_code == 404


def test_api_keys_create_list_revoke(app):
    web = app.test_client()
    key = api_key_for(web, "carol")
    headers = {"Authorization": f"Bearer {key}"}
    listed = web.get("/api/keys", headers=headers).json["keys"]
    assert len(listed) == 1 and listed[0]["active"] and key.startswith(listed[0]["prefix"])
    assert "key" not in listed[0] and key not in str(listed)
    assert web.delete(f"/api/keys/{listed[0]['id']}", headers=headers).json["active"] is False
    reply = app.test_client().get("/api/jobs", headers=headers)
    assert reply.status_code == 401 and "revoked" in reply.json["error"]
    assert app.test_client().get("/api/jobs", headers={"Authorization": "Basic x"}).status_code == 401


def test_anonymous_use_can_be_switched_off(make_app, portrait_path, speech_path):
    app = make_app(allow_anonymous=False)
    reply = generate(app.test_client(), portrait_path, speech_path)
    assert reply.status_code == 401 and reply.is_json
    key = api_key_for(app.test_client(), "dave")
    assert generate(app.test_client(), portrait_path, speech_path,
                    headers={"Authorization": f"Bearer {key}"}).status_code == 202


def test_session_cookie_api_calls_need_the_csrf_token(app, portrait_path, speech_path):
    web = app.test_client()
    sign_up(web, "erin")
    reply = generate(web, portrait_path, speech_path)
    assert reply.status_code == 400 and reply.json["field"] == "csrf_token"
    reply = generate(web, portrait_path, speech_path, headers={"X-CSRF-Token": csrf_of(web)})
    assert reply.status_code == 202 and reply.json["owned"] is True
    assert web.post("/logout").status_code == 400  # pages always need it


def test_errors_are_json_with_security_headers(client):
    for method, path, status in (("get", "/api/nope", 404), ("put", "/api/generate", 405),
                                 ("get", "/api/jobs/" + "0" * 32, 404), ("get", "/api/jobs", 401)):
        reply = getattr(client, method)(path)
        assert reply.status_code == status and reply.is_json and reply.json["status"] == status, path
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
    page = client.get("/no-such-page")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_openapi_lists_every_route(app, client):
    spec = client.get("/api/openapi.json").json
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    routes = {r.rule.replace("<job_id>", "{job_id}").replace("<int:key_id>", "{key_id}")
              for r in app.url_map.iter_rules() if r.rule.startswith("/api/") and "admin" not in r.rule}
    routes.discard("/api/jobs/{job_id}/<any(image, audio, thumb):kind>")
    routes |= {"/api/jobs/{job_id}/image", "/api/jobs/{job_id}/audio"}
    assert routes <= documented, routes - documented


def test_generate_again_and_pages(app, portrait_path, speech_path):
    web = app.test_client()
    sign_up(web, "frank")
    token = csrf_of(web)
    reply = web.post("/", data={"image": upload(portrait_path), "audio": upload(speech_path), "pose_style": "3",
                                "csrf_token": token}, content_type="multipart/form-data")
    assert reply.status_code == 303
    job_id = reply.headers["Location"].rsplit("/", 1)[-1]
    assert wait_for_job(web, job_id)["status"] == "done"
    page = web.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "<video" in page and f"/api/jobs/{job_id}/video" in page and "Generate again" in page
    again = web.post(f"/jobs/{job_id}/again", data={"pose_style": "9", "still_mode": "true", "csrf_token": token})
    assert again.status_code == 303
    second = wait_for_job(web, again.headers["Location"].rsplit("/", 1)[-1])
    assert second["options"]["pose_style"] == 9 and second["options"]["still_mode"] is True
    assert second["image"]["sha256"] == wait_for_job(web, job_id)["image"]["sha256"]
    history = web.get("/history").get_data(as_text=True)
    assert history.index(second["id"]) < history.index(job_id)  # newest first
    assert web.post(f"/jobs/{job_id}/delete", data={"csrf_token": token}).status_code == 303
    assert job_id not in web.get("/history").get_data(as_text=True)
    assert app.test_client().get("/history").status_code == 303  # signed out: to the sign-in page
