"""DemoFront: the web front of the talking-head service (Flask). `create_app(config)` builds it."""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, g, request

from .config import MAX_FIELD_BYTES, Config
from .db import Database
from .model_client import ModelClientProtocol
from .replicas import ReplicaPool
from .retention import RetentionSweeper
from .storage import Storage
from .worker import JobRunner

logger = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                                "style-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                                "base-uri 'self'; form-action 'self'"),
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass
class Front:
    """What the app's views share: settings, database, file storage, the job runner, the retention sweeper, the
    rate limiter and the job factory."""

    config: Config
    db: Database
    storage: Storage
    client: ModelClientProtocol
    runner: JobRunner
    sweeper: RetentionSweeper
    jobs: "object" = None
    limiter: "object" = None

    def close(self) -> None:
        self.sweeper.stop()
        self.runner.shutdown(wait=True)
        self.db.dispose()


def _secret_key(config: Config) -> str:
    """SECRET_KEY, else one kept in the data folder so sessions survive a restart."""
    if config.secret_key:
        return config.secret_key
    path = Path(config.data_dir) / "secret_key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(config: Config | None = None, model_client: ModelClientProtocol | None = None) -> Flask:
    """Build the app: migrate the database, start the job runner (re-queue/fail leftovers) and the retention
    sweeper, register the areas and their rate limits. Call it once per process: it starts the threads that
    dispatch jobs (DemoFront/app.py serves the one app it makes)."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from . import admin, api, auth, health, live, pages, preview, streaming
    from .errors import register_error_handlers
    from .jobs import JobFactory
    from .media import limit_pillow_pixels
    from .rate_limits import install_rate_limits
    from .session_cookie import SessionInterface
    from .validation import MAX_IMAGE_SIDE

    config = config or Config.from_env()
    app = Flask(__name__, instance_path=str(Path(config.data_dir).resolve().parent))
    app.config.update(
        SECRET_KEY=_secret_key(config),
        MAX_CONTENT_LENGTH=config.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=MAX_FIELD_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.session_cookie_secure == "true",  # "auto": per request, see session_cookie
        PERMANENT_SESSION_LIFETIME=timedelta(days=14),
        FRONT=config,
        TESTING=config.testing,
        JSON_SORT_KEYS=False,
    )
    app.session_interface = SessionInterface()
    if config.trusted_proxies:  # the client's address and scheme as the last N proxies forwarded them
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    limit_pillow_pixels(MAX_IMAGE_SIDE)
    db = Database(config.database_url)
    db.upgrade()
    storage = Storage(config.data_dir)
    client = model_client or ReplicaPool(config.model_urls, timeout=config.model_timeout_seconds,
                                         retries=config.model_retries)
    runner = JobRunner(db, storage, client, config.workers,
                       stale_seconds=(config.model_retries + 1) * config.model_timeout_seconds + 60)
    sweeper = RetentionSweeper(db, storage, config.job_retention_days, config.retention_sweep_minutes * 60)
    front = Front(config=config, db=db, storage=storage, client=client, runner=runner, sweeper=sweeper)
    front.jobs = JobFactory(front)
    app.extensions["demofront"] = front

    app.before_request(_start_timer)
    app.before_request(auth.load_user)
    app.after_request(_finish_response)
    app.context_processor(lambda: {"current_user": g.get("user"), "csrf_token": auth.csrf_token,
                                   "allow_anonymous": config.allow_anonymous})
    register_error_handlers(app)
    for blueprint in (pages.bp, api.bp, auth.bp, admin.bp, health.bp, live.bp, preview.bp):
        app.register_blueprint(blueprint)
    streaming.register(app)
    front.limiter = install_rate_limits(app, config)

    runner.recover()
    sweeper.start()
    logger.info("front ready: database %s, data in %s, model service %s", db.dialect, storage.root,
                config.sadtalker_url)
    return app


def _start_timer() -> None:
    g.started = time.perf_counter()


def _finish_response(response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    started = g.get("started")
    if started is not None:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response
