"""Fixtures for the front's tests: the app over SQLite and (when TEST_POSTGRES_URL is set) PostgreSQL, a fake
model client that writes a real small mp4, and helpers for multipart requests and signed-in clients."""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from demofront import create_app
from demofront.config import Config
from demofront.model_client import ModelCancelledError, ModelOutcome, ModelRejectedError, ModelUnavailableError
from sadtalker.io.audio import load_audio
from sadtalker.io.video import VideoWriter
from sadtalker.options import GenerationOptions

POSTGRES_ENV = "TEST_POSTGRES_URL"


class FakeModelClient:
    """Stands in for the model service: reports progress, then writes a real H.264/AAC mp4 (the portrait, shrunk,
    with a moving bar) as long as the audio. `mode` 'noface' / 'unreachable' fail like the real service;
    `gate` (an Event) holds every job in 'running' until set."""

    url = "http://fake-model.invalid/"

    def __init__(self, mode: str = "ok", side: int = 96, gate: threading.Event | None = None) -> None:
        self.mode, self.side, self.gate = mode, side, gate
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()

    def generate(self, image: Path, audio: Path, options: GenerationOptions, output: Path,
                 progress: Callable[[float, str], None], cancelled: Callable[[], bool] | None = None
                 ) -> ModelOutcome:
        from PIL import Image

        self.calls.append({"image": image, "audio": audio, "options": options})
        self.started.set()
        progress(0.1, "checking the inputs")
        if self.gate is not None:
            deadline = time.monotonic() + 30
            while not self.gate.wait(0.05) and time.monotonic() < deadline:
                if cancelled is not None and cancelled():
                    raise ModelCancelledError("cancelled")
        if self.mode == "unreachable":
            raise ModelUnavailableError(f"the model service is unreachable at {self.url} (ConnectError)")
        face_pixels = np.asarray(Image.open(image).convert("RGB"))
        if self.mode == "noface" or face_pixels.reshape(-1, 3).std(axis=0).max() < 2.0:  # a flat picture has no face, as the real service says
            raise ModelRejectedError("no face found in the image")
        samples = load_audio(audio)
        frames = max(1, round(len(samples) / 16000 * 25))
        face = np.asarray(Image.open(image).convert("RGB").resize((self.side, self.side)), dtype=np.uint8)
        with VideoWriter(output, self.side, self.side, audio=samples) as writer:
            for i in range(frames):
                frame = face.copy()
                row = int(i / frames * (self.side - 4))
                frame[row:row + 4] = (255, 200, 0)
                writer.write(frame)
                if i % 25 == 0:
                    progress(0.2 + 0.8 * i / frames, "rendering frames")
        return ModelOutcome(engine="fake")


class StreamingFakeModelClient:
    """Stands in for the model service's `predict_stream`: renders the portrait (shrunk, with a moving bar) at
    `fps_pace` frames per wall-clock second into a fragmented MP4 through the service's own streaming code
    (`stream_generation`), and the front receives it with its own (`receive_stream`): only gradio's transport is
    left out. At real-time pace the job is still running while its first seconds play."""

    url = "http://fake-stream-model.invalid/"

    def __init__(self, side: int = 128, fps_pace: float = 25.0, tmp: Path | None = None) -> None:
        self.side, self.fps_pace = side, fps_pace
        self.results = Path(tmp or "/tmp") / "fake-stream-results"
        self.results.mkdir(parents=True, exist_ok=True)

    def generate(self, image: Path, audio: Path, options: GenerationOptions, output: Path,
                 progress: Callable[[float, str], None], cancelled: Callable[[], bool] | None = None
                 ) -> ModelOutcome:
        from types import SimpleNamespace

        from PIL import Image

        from demofront.streaming import receive_stream
        from sadtalker.engines.base import GenerationResult
        from sadtalker.service.streaming import stream_generation

        side, pace = self.side, self.fps_pace

        def render(image_path, audio_path, chosen, ref_video=None, progress=None, output=None):
            samples = load_audio(audio_path)
            frames = max(1, round(len(samples) / 16000 * 25))
            face = np.asarray(Image.open(image_path).convert("RGB").resize((side, side)), dtype=np.uint8)
            started = time.monotonic()
            with VideoWriter(output, side, side, audio=samples) as writer:
                for i in range(frames):
                    frame = face.copy()
                    row = int(i / frames * (side - 4))
                    frame[row:row + 4] = (255, 200, 0)
                    writer.write(frame)
                    progress((i + 1) / frames, "rendering frames")
                    time.sleep(max(0.0, started + (i + 1) / pace - time.monotonic()))
            return GenerationResult(Path(output), "fake-stream", frames, len(samples) / 16000, side, side)

        service = SimpleNamespace(settings=SimpleNamespace(results_dir=self.results), generate=render)
        messages = (chunk.to_message() for chunk in stream_generation(service, image, audio, options))
        info = receive_stream(messages, output.parent, output, progress)
        return ModelOutcome(engine=info["engine"])


def reset_postgres(url: str) -> None:
    from sqlalchemy import text

    from demofront.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS job_attempts, jobs, api_keys, users, alembic_version CASCADE"))
    engine.dispose()


def database_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'front.db'}"
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: start a server with `eval \"$(bash scripts/start_postgres.sh)\"` "
                    "to run the PostgreSQL variant")
    reset_postgres(url)
    return url


def make_config(tmp_path: Path, url: str, **changes: Any) -> Config:
    base = Config(database_url=url, data_dir=tmp_path / "data", secret_key="test-secret", rate_limit="1000/minute",
                  signup_limit_per_address="1000/hour", workers=2, testing=True, admin_users=("admin",),
                  queue_url="memory://", queue_min_backoff_seconds=0.05, queue_max_backoff_seconds=0.2,
                  queue_max_retries=1)
    return base.with_(**changes) if changes else base


class AppFactory:
    """Builds apps on one database; closes them all at the end."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.apps: list[Any] = []

    def __call__(self, client: Any = None, **changes: Any) -> Any:
        app = create_app(make_config(self.tmp_path, self.url, **changes), model_client=client or FakeModelClient())
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in self.apps:
            app.extensions["demofront"].close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_app(db_kind: str, tmp_path: Path):
    factory = AppFactory(tmp_path, database_url(db_kind, tmp_path))
    yield factory
    factory.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def upload(path: Path, name: str | None = None) -> tuple[Any, str]:
    return (open(path, "rb"), name or path.name)


def wait_for_job(client: Any, job_id: str, timeout: float = 30, headers: dict[str, str] | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get(f"/api/jobs/{job_id}", headers=headers or {})
        assert reply.status_code == 200, reply.json
        if reply.json["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return reply.json
        time.sleep(0.05)


def csrf_of(client: Any) -> str:
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def sign_up(client: Any, username: str, password: str = "correct horse 1") -> None:
    token = csrf_of(client)
    reply = client.post("/signup", data={"username": username, "password": password, "csrf_token": token})
    assert reply.status_code == 303, reply.get_data(as_text=True)[:500]


def api_key_for(client: Any, username: str) -> str:
    """Sign up on a fresh client and make an API key; returns the key."""
    sign_up(client, username)
    token = csrf_of(client)
    reply = client.post("/api/keys", json={"name": "tests"}, headers={"X-CSRF-Token": token})
    assert reply.status_code == 201, reply.json
    return reply.json["key"]
