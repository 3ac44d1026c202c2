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
from .retention import RetentionSweeper
from .storage import Storage
from .tasks import JobQueue

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
    """What the app's views share: settings, database, file storage, the task queue, the retention sweeper, the
    rate limiter and the job factory."""

    config: Config
    db: Database
    storage: Storage
    queue: JobQueue
    sweeper: RetentionSweeper
    jobs: "object" = None
    limiter: "object" = None
    client: "object" = None   # the model service as this front reaches it (portrait previews; workers have their own)

    def wait(self, job_id: str, timeout: float) -> bool:
        """Block until the job ends (True) or `timeout` passes (False), watching its row."""
        from .models import FINAL_STATUSES, Job

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.session() as s:
                job = s.get(Job, job_id)
                if job is None or job.status in FINAL_STATUSES:
                    return True
            time.sleep(0.2)
        return False

    def close(self) -> None:
        self.sweeper.stop()
        self.queue.close()
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
    """Build the app: migrate the database, connect to the task queue (and start this front's webhook deliveries;
    with QUEUE_URL=memory:// also the job workers, on `model_client`), start the retention sweeper, register the
    areas and their rate limits. Call it once per process (DemoFront/app.py serves the one app it makes)."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from . import admin, api, auth, health, live, pages, preview, streaming
    from .errors import register_error_handlers
    from .jobs import JobFactory
    from .media import limit_pillow_pixels
    from .model_client import ModelClient
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
    queue = JobQueue(config)
    sweeper = RetentionSweeper(db, storage, config.job_retention_days, config.retention_sweep_minutes * 60)
    front = Front(config=config, db=db, storage=storage, queue=queue, sweeper=sweeper)
    front.jobs = JobFactory(front)
    front.client = model_client or ModelClient(config.sadtalker_url, timeout=config.model_timeout_seconds)
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

    _start_queue_consumers(app, front, model_client)
    sweeper.start()
    logger.info("front ready: database %s, data in %s, queue %s", db.dialect, storage.root,
                _redacted(config.queue_url))
    return app


def _start_queue_consumers(app: Flask, front: Front, model_client: ModelClientProtocol | None) -> None:
    """Every front delivers webhooks; with the in-memory queue it also runs the jobs (WORKERS threads)."""
    from .api import describe_for_webhook
    from .tasks import is_memory
    from .webhooks import WebhookSender

    config = front.config
    sender = WebhookSender(front.db, lambda job: describe_for_webhook(app, job), config.webhook_max_retries,
                           config.webhook_timeout_seconds, config.webhook_allow_private)
    if not is_memory(config.queue_url):
        front.queue.consume(webhooks=sender, threads=2)
        return
    from .model_client import ModelClient
    from .worker import JobWorker

    client = model_client or ModelClient(config.sadtalker_url, timeout=config.model_timeout_seconds)
    worker = JobWorker(front.db, front.storage, client, config.queue_max_retries, on_end=front.jobs.ended,
                       name=config.worker_name)
    front.queue.consume(jobs=worker, webhooks=sender, threads=config.workers)  # webhooks share the threads


def _redacted(url: str) -> str:
    """A queue URL without its password, for the log."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return url.replace(parts.password, "***") if parts.password else url


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
