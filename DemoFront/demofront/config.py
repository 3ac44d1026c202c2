"""The front's settings, read once from the environment into one frozen dataclass."""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

FRONT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VAR = FRONT_ROOT / "instance"
MAX_FIELD_BYTES = 1024 * 1024  # one text field of a form (files are bounded by MAX_UPLOAD_MB only)
COOKIE_SECURE_CHOICES = ("auto", "true", "false")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false; got {text!r}")


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """'10/minute', '100/hour', '5/30s' -> (count, window seconds); '0', 'off' or '' -> no limit."""
    text = text.strip().lower()
    if text in ("", "0", "off", "none", "false"):
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?", text)
    if not match:
        raise ValueError(f"a rate limit must look like '10/minute', '100/hour' or '10/15min'; got {text!r}")
    unit = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}[match.group(3)]
    return int(match.group(1)), float(int(match.group(2) or 1) * unit)


def limit_string(text: str) -> str | None:
    """A rate in our notation ('10/minute', '5/30s') as the limits library writes it ('10 per 60 second')."""
    rate = parse_rate_limit(text)
    if rate is None:
        return None
    count, window = rate
    return f"{count} per {int(window)} second"


def instance_name() -> str:
    """This process's name on job rows and in the queue (the host name: a Kubernetes pod's name)."""
    return (socket.gethostname() or "worker")[:64]


def _cookie_secure(text: str) -> str:
    value = text.strip().lower()
    if value in ("", "auto"):
        return "auto"
    return "true" if _bool(value) else "false"


@dataclass(frozen=True)
class Config:
    """Every setting of the front. `from_env()` reads the variables named in the README's table."""

    database_url: str = ""
    data_dir: Path = DEFAULT_VAR / "data"
    sadtalker_url: str = "http://127.0.0.1:7860/"
    live_url: str = ""  # the live mode's WebSocket as browsers reach it; "" = the first model service's /live/ws
    host: str = "127.0.0.1"
    port: int = 5000
    max_upload_mb: float = 50.0
    max_audio_seconds: float = 300.0
    max_text_chars: int = 1000
    allow_anonymous: bool = True
    rate_limit: str = "60/minute"
    workers: int = 2  # QUEUE_URL=memory:// only: jobs run in this many threads of the front
    wait_timeout_seconds: float = 900.0
    model_timeout_seconds: float = 3600.0
    # the task queue (demofront/tasks.py)
    queue_url: str = "redis://127.0.0.1:6379/0"
    queue_namespace: str = "dramatiq"
    queue_max_retries: int = 8
    queue_min_backoff_seconds: float = 2.0
    queue_max_backoff_seconds: float = 60.0
    queue_heartbeat_seconds: float = 30.0
    queue_maintenance_chance: int = 20_000  # of a million broker commands: look for dead workers' jobs
    worker_name: str = ""
    # webhooks (demofront/webhooks.py)
    webhook_allow_private: bool = False
    webhook_max_retries: int = 6
    webhook_timeout_seconds: float = 10.0
    secret_key: str = ""
    admin_users: tuple[str, ...] = ()
    page_size: int = 12
    # security and bounds (README: Security)
    trusted_proxies: int = 0
    session_cookie_secure: str = "auto"
    login_limit_per_account: str = "10/15min"
    login_limit_per_address: str = "50/15min"
    signup_limit_per_address: str = "10/hour"
    ratelimit_storage_uri: str = "memory://"
    max_queued_per_account: int = 10
    max_queued_jobs: int = 200
    job_retention_days: float = 30.0
    retention_sweep_minutes: float = 60.0
    # the HTTP server (DemoFront/app.py)
    server_threads: int = 16
    read_timeout_seconds: float = 30.0
    testing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{DEFAULT_VAR / 'demofront.db'}")
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("rate_limit", "login_limit_per_account", "login_limit_per_address",
                     "signup_limit_per_address"):
            try:  # fail at start-up, not on the first request
                parse_rate_limit(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name.upper()}: {exc}") from None
        if self.session_cookie_secure not in COOKIE_SECURE_CHOICES:
            raise ValueError(f"SESSION_COOKIE_SECURE must be auto, true or false; got {self.session_cookie_secure!r}")
        for name in ("trusted_proxies", "max_queued_per_account", "max_queued_jobs", "job_retention_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must be 0 or more; got {getattr(self, name)}")
        for name in ("retention_sweep_minutes", "server_threads", "read_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.upper()} must be more than 0; got {getattr(self, name)}")
        for name in ("queue_max_retries", "webhook_max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must be 0 or more; got {getattr(self, name)}")
        for name in ("queue_min_backoff_seconds", "queue_max_backoff_seconds", "queue_heartbeat_seconds",
                     "webhook_timeout_seconds", "model_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.upper()} must be more than 0; got {getattr(self, name)}")
        if not self.queue_url.startswith(("redis://", "rediss://", "unix://", "memory://")):
            raise ValueError(f"QUEUE_URL must be a redis://, rediss://, unix:// or memory:// URL; got "
                             f"{self.queue_url!r}")
        if not self.sadtalker_url.startswith(("http://", "https://")):
            raise ValueError(f"SADTALKER_URL must be an http(s) URL; got {self.sadtalker_url!r}")
        if not self.worker_name:
            object.__setattr__(self, "worker_name", instance_name())
        if self.workers < 1:
            raise ValueError(f"WORKERS must be at least 1; got {self.workers}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def live_ws_url(self) -> str:
        """LIVE_URL, else ws(s)://<first model service>/live/ws (the page's WebSocket goes to the model service,
        where the frames are made; a deployment routes /live/ws to it beside the front)."""
        if self.live_url:
            return self.live_url
        first = self.sadtalker_url if self.sadtalker_url.endswith("/") else self.sadtalker_url + "/"
        return ("wss://" + first[len("https://"):] if first.startswith("https://") else
                "ws://" + first[len("http://"):]) + "live/ws"

    @property
    def rate(self) -> tuple[int, float] | None:
        return parse_rate_limit(self.rate_limit)

    def with_(self, **changes: Any) -> "Config":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Config":
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            database_url=env.get("DATABASE_URL", ""),
            data_dir=Path(env.get("DATA_DIR", str(d.data_dir))),
            sadtalker_url=env.get("SADTALKER_URL", d.sadtalker_url),
            live_url=env.get("LIVE_URL", d.live_url),
            host=env.get("FRONT_HOST", d.host),
            port=int(env.get("FRONT_PORT", d.port)),
            max_upload_mb=float(env.get("MAX_UPLOAD_MB", d.max_upload_mb)),
            max_audio_seconds=float(env.get("MAX_AUDIO_SECONDS", d.max_audio_seconds)),
            max_text_chars=int(env.get("MAX_TEXT_CHARS", d.max_text_chars)),
            allow_anonymous=_bool(env.get("ALLOW_ANONYMOUS", "true")),
            rate_limit=env.get("RATE_LIMIT", d.rate_limit),
            workers=int(env.get("WORKERS", d.workers)),
            wait_timeout_seconds=float(env.get("WAIT_TIMEOUT_SECONDS", d.wait_timeout_seconds)),
            model_timeout_seconds=float(env.get("MODEL_TIMEOUT_SECONDS", d.model_timeout_seconds)),
            queue_url=env.get("QUEUE_URL") or env.get("REDIS_URL") or d.queue_url,
            queue_namespace=env.get("QUEUE_NAMESPACE", d.queue_namespace),
            queue_max_retries=int(env.get("QUEUE_MAX_RETRIES", d.queue_max_retries)),
            queue_min_backoff_seconds=float(env.get("QUEUE_MIN_BACKOFF_SECONDS", d.queue_min_backoff_seconds)),
            queue_max_backoff_seconds=float(env.get("QUEUE_MAX_BACKOFF_SECONDS", d.queue_max_backoff_seconds)),
            queue_heartbeat_seconds=float(env.get("QUEUE_HEARTBEAT_SECONDS", d.queue_heartbeat_seconds)),
            queue_maintenance_chance=int(env.get("QUEUE_MAINTENANCE_CHANCE", d.queue_maintenance_chance)),
            worker_name=env.get("WORKER_NAME", ""),
            webhook_allow_private=_bool(env.get("WEBHOOK_ALLOW_PRIVATE", "false")),
            webhook_max_retries=int(env.get("WEBHOOK_MAX_RETRIES", d.webhook_max_retries)),
            webhook_timeout_seconds=float(env.get("WEBHOOK_TIMEOUT_SECONDS", d.webhook_timeout_seconds)),
            secret_key=env.get("SECRET_KEY", ""),
            admin_users=tuple(u.strip() for u in env.get("ADMIN_USERS", "").split(",") if u.strip()),
            trusted_proxies=int(env.get("TRUSTED_PROXIES", d.trusted_proxies)),
            session_cookie_secure=_cookie_secure(env.get("SESSION_COOKIE_SECURE", d.session_cookie_secure)),
            login_limit_per_account=env.get("LOGIN_LIMIT_PER_ACCOUNT", d.login_limit_per_account),
            login_limit_per_address=env.get("LOGIN_LIMIT_PER_ADDRESS", d.login_limit_per_address),
            signup_limit_per_address=env.get("SIGNUP_LIMIT_PER_ADDRESS", d.signup_limit_per_address),
            ratelimit_storage_uri=env.get("RATELIMIT_STORAGE_URI", d.ratelimit_storage_uri),
            max_queued_per_account=int(env.get("MAX_QUEUED_PER_ACCOUNT", d.max_queued_per_account)),
            max_queued_jobs=int(env.get("MAX_QUEUED_JOBS", d.max_queued_jobs)),
            job_retention_days=float(env.get("JOB_RETENTION_DAYS", d.job_retention_days)),
            retention_sweep_minutes=float(env.get("RETENTION_SWEEP_MINUTES", d.retention_sweep_minutes)),
            server_threads=int(env.get("SERVER_THREADS", d.server_threads)),
            read_timeout_seconds=float(env.get("READ_TIMEOUT_SECONDS", d.read_timeout_seconds)),
        )
