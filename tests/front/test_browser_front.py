"""The front in headless Chromium (Debian's chromium driven by Playwright): sign up, upload the astronaut and a
clip, watch the live status reach done, play the video, find it in the history, delete it.

The first test holds the job with a FakeModelClient inside the front process (it writes a real H.264/AAC mp4 of the
portrait) so the running state can be watched; the second runs both services as real subprocesses (the landmark
engine behind the front over HTTP). Screenshots go to artifacts/front_*.png."""
from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest
from front_support import FakeModelClient, make_config

from demofront import create_app

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture
def live_front(tmp_path):
    from werkzeug.serving import make_server

    gate = threading.Event()
    fake = FakeModelClient(side=128, gate=gate)
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'browser.db'}"), model_client=fake)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{port}", "app": app, "gate": gate, "fake": fake}
    finally:
        gate.set()
        server.shutdown()
        thread.join(10)
        app.extensions["demofront"].close()


@pytest.fixture
def page():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--headless=new", "--disable-background-networking",
            "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run",
            "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--mute-audio"])
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())
        yield page
        assert errors == [], f"JavaScript errors on the page: {errors}"
        context.close()
        browser.close()


def test_sign_up_generate_watch_play_history_delete(live_front, page, portrait_path, speech_path, no_face_path,
                                                    artifacts_dir):
    base = live_front["url"]
    page.goto(base + "/signup")
    page.fill("input[name=username]", "astro")
    page.fill("input[name=password]", "moon landing 1969")
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    assert page.locator("header .who").inner_text() == "astro"

    page.set_input_files("input[name=image]", str(portrait_path))
    page.set_input_files("input[name=audio]", str(speech_path))
    page.select_option("select[name=preprocess]", "full")
    page.fill("input[name=pose_style]", "5")
    page.click("#generate-form button[type=submit]")
    page.wait_for_url(f"{base}/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]

    # Held by the gate: the page shows the job running, then reaches done without a reload.
    page.wait_for_function("() => document.getElementById('job-status').textContent === 'running'")
    assert "checking the inputs" in page.locator("#job-stage").inner_text()
    assert page.get_attribute("#job-video", "src") == f"/api/jobs/{job_id}/stream"  # waiting for a first fragment
    page.evaluate("window.__sameDocument = true")
    live_front["gate"].set()
    page.wait_for_function("() => document.getElementById('job-status').textContent === 'done'", timeout=60_000)
    assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded
    assert page.evaluate("document.getElementById('job-progress').value") == 1
    assert page.locator("#job-engine").inner_text() == "fake"

    page.wait_for_function("() => document.getElementById('job-video').readyState >= 1", timeout=30_000)
    duration = page.evaluate("document.getElementById('job-video').duration")
    from demofront.models import Job

    with live_front["app"].extensions["demofront"].db.session() as s:
        seconds = s.get(Job, job_id).audio_seconds
    assert duration > 0 and abs(duration - seconds) < 0.3, (duration, seconds)
    page.evaluate("document.getElementById('job-video').play()")
    page.wait_for_function("() => document.getElementById('job-video').currentTime > 0.3", timeout=15_000)
    assert page.evaluate("document.getElementById('job-video').error") is None
    download = page.get_attribute("#job-download", "href")
    assert download == f"/api/jobs/{job_id}/video?download=1"
    page.screenshot(path=str(artifacts_dir / "front_job_page.png"), full_page=True)

    # A picture without a face: the job fails and the page shows why.
    page.goto(base + "/")
    page.set_input_files("input[name=image]", str(no_face_path))
    page.set_input_files("input[name=audio]", str(speech_path))
    page.click("#generate-form button[type=submit]")
    page.wait_for_url(f"{base}/jobs/*")
    failed_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_function("() => document.getElementById('job-status').textContent === 'failed'")
    assert page.locator("#job-error").inner_text() == "no face found in the image"
    assert page.locator("#job-progress").is_hidden()
    page.screenshot(path=str(artifacts_dir / "front_job_failed.png"), full_page=True)

    page.click("text=History")
    page.wait_for_url(base + "/history")
    tiles = page.locator(".tile")
    assert tiles.count() == 2
    assert tiles.nth(0).get_attribute("data-job-id") == failed_id  # newest first
    done_tile = page.locator(f".tile[data-job-id='{job_id}']")
    assert "done" in done_tile.inner_text() and "full" in done_tile.inner_text()
    page.wait_for_function(
        f"() => document.querySelector(\".tile[data-job-id='{job_id}'] img.thumb\").naturalWidth > 0")
    page.screenshot(path=str(artifacts_dir / "front_history.png"), full_page=True)

    folder = live_front["app"].extensions["demofront"].storage.job_dir(job_id)
    assert (folder / "result.mp4").is_file()
    done_tile.locator("button.danger").click()
    page.wait_for_url(base + "/history")
    assert page.locator(f".tile[data-job-id='{job_id}']").count() == 0
    assert page.locator(".tile").count() == 1
    assert not folder.exists()


def test_the_page_with_the_real_model_service(page, portrait_path, speech_path, tmp_path, artifacts_dir):
    """Both services as real subprocesses (the landmark engine behind the front, over HTTP): a signed-up user
    makes a talking video on the page and plays it."""
    from live_services import running_product

    with running_product(tmp_path) as (_, base):
        page.goto(base + "/signup")
        page.fill("input[name=username]", "collins")
        page.fill("input[name=password]", "columbia 1999 sts-93")
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        page.set_input_files("input[name=image]", str(portrait_path))
        page.set_input_files("input[name=audio]", str(speech_path))
        page.click("#generate-form button[type=submit]")
        page.wait_for_url(f"{base}/jobs/*")
        page.wait_for_function("() => ['done', 'failed'].includes(document.getElementById('job-status').textContent)",
                               timeout=120_000)
        assert page.locator("#job-status").inner_text() == "done", page.locator("#job-error").inner_text()
        assert page.locator("#job-engine").inner_text() == "landmark"
        page.wait_for_function("() => document.getElementById('job-video').readyState >= 1", timeout=30_000)
        assert page.evaluate("document.getElementById('job-video').duration") > 2.5
        page.evaluate("document.getElementById('job-video').play()")
        page.wait_for_function("() => document.getElementById('job-video').currentTime > 0.5", timeout=15_000)
        page.evaluate("document.getElementById('job-video').pause()")
        page.screenshot(path=str(artifacts_dir / "front_job_page_landmark.png"), full_page=True)


@pytest.fixture
def streaming_front(tmp_path):
    from werkzeug.serving import make_server

    from front_support import StreamingFakeModelClient

    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'stream.db'}"),
                     model_client=StreamingFakeModelClient(side=128, fps_pace=25.0, tmp=tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{port}", "app": app}
    finally:
        server.shutdown()
        thread.join(10)
        app.extensions["demofront"].close()


def test_video_plays_while_the_job_still_runs(streaming_front, page, portrait_path, long_speech_path,
                                              artifacts_dir):
    """Progressive playback: rendered at real-time pace, the job runs ~10 s; the page's video starts from the
    stream's first fragments and its currentTime advances while the status still says running."""
    base = streaming_front["url"]
    page.goto(base + "/")
    page.set_input_files("input[name=image]", str(portrait_path))
    page.set_input_files("input[name=audio]", str(long_speech_path))
    page.click("#generate-form button[type=submit]")
    page.wait_for_url(f"{base}/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]
    assert page.get_attribute("#job-video", "src") == f"/api/jobs/{job_id}/stream"
    page.wait_for_function("() => document.getElementById('job-video').currentTime > 1.0", timeout=20_000)
    state = page.evaluate("""() => ({status: document.getElementById('job-status').textContent,
        t: document.getElementById('job-video').currentTime, eta: document.getElementById('job-eta').textContent,
        progress: document.getElementById('job-progress').value})""")
    page.screenshot(path=str(artifacts_dir / "front_job_streaming.png"), full_page=True)
    assert state["status"] == "running", state
    assert 0 < state["progress"] < 1 and "s left" in state["eta"], state
    page.wait_for_function("() => document.getElementById('job-status').textContent === 'done'", timeout=60_000)
    page.wait_for_function("() => document.getElementById('job-video').ended", timeout=30_000)
    assert page.evaluate("document.getElementById('job-video').error") is None
    assert page.evaluate("document.getElementById('job-video').currentTime") > 9.5  # the whole clip played
