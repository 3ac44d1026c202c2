"""Several model service replicas behind one front: health-checked, each job to the least busy live replica,
and a job whose replica dies or times out retried on another one (SADTALKER_URLS, MODEL_RETRIES)."""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sadtalker.options import GenerationOptions

from .model_client import ModelClient, ModelError, ModelOutcome, ModelUnavailableError, ProgressFn

logger = logging.getLogger(__name__)

HEALTH_TTL_SECONDS = 5.0
HEALTH_TIMEOUT_SECONDS = 3.0


def parse_urls(text: str) -> tuple[str, ...]:
    """'http://a:7860, http://b:7860/' -> both, each ending in '/', duplicates dropped, order kept."""
    urls: list[str] = []
    for part in text.split(","):
        url = part.strip()
        if not url:
            continue
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"SADTALKER_URLS: each entry must be an http(s) URL; got {url!r}")
        url = url if url.endswith("/") else url + "/"
        if url not in urls:
            urls.append(url)
    if not urls:
        raise ValueError("SADTALKER_URLS: no model service URL given")
    return tuple(urls)


@dataclass
class Attempt:
    """One try of one job on one replica, as recorded on the job."""

    number: int
    replica: str
    started_at: float
    finished_at: float | None = None
    outcome: str = "running"  # running | done | failed
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "replica": self.replica, "started_at": self.started_at, "finished_at": self.finished_at,
                "outcome": self.outcome, "error": self.error}


@dataclass
class Replica:
    url: str
    client: Any
    in_flight: int = 0
    up: bool | None = None  # None: not checked yet
    checked_at: float = 0.0
    health: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    dispatched: int = 0


class ReplicaPool:
    """Implements the model client protocol over several model services.

    A job goes to a live replica with the fewest jobs in flight from this front (ties: the service's own
    `running` count, then round robin). A replica that is unreachable, dies or times out mid-job is marked down
    and the job is retried on another live replica, at most `retries` times; an input rejection ('no face') is
    final and never retried. Every try is reported through `on_attempt`, so the job row records all of them.
    """

    def __init__(self, urls: tuple[str, ...] | list[str], timeout: float = 3600.0, retries: int = 1,
                 client_factory: Callable[[str, float], Any] | None = None,
                 health_ttl: float = HEALTH_TTL_SECONDS) -> None:
        factory = client_factory or (lambda url, t: ModelClient(url, timeout=t))
        self.replicas = [Replica(url=u, client=factory(u, timeout)) for u in urls]
        if not self.replicas:
            raise ValueError("ReplicaPool needs at least one model service URL")
        self.retries = max(0, int(retries))
        self.health_ttl = health_ttl
        self._lock = threading.Lock()
        self._turn = 0

    @property
    def url(self) -> str:
        return ",".join(r.url for r in self.replicas)

    # -- health ----------------------------------------------------------------------------------------------

    def check(self, replica: Replica, force: bool = False) -> bool:
        """Refresh one replica's health from its `/health` route (cached for `health_ttl` seconds)."""
        if not force and replica.up is not None and time.monotonic() - replica.checked_at < self.health_ttl:
            return bool(replica.up)
        try:
            with urllib.request.urlopen(replica.url + "health", timeout=HEALTH_TIMEOUT_SECONDS) as reply:
                info = json.load(reply)
            up, error = info.get("status") == "ok", None if info.get("status") == "ok" else str(info)
        except urllib.error.HTTPError as exc:
            info, up, error = {}, False, f"health answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            info, up, error = {}, False, f"unreachable ({type(exc).__name__}: {str(exc)[:160]})"
        with self._lock:
            if up and not replica.up and replica.up is not None:
                logger.info("model replica %s is back", replica.url)
            replica.up, replica.health, replica.error, replica.checked_at = up, info, error, time.monotonic()
        return up

    def health(self, force: bool = True) -> list[dict[str, Any]]:
        """Every replica as the front sees it (for /healthz)."""
        if len(self.replicas) > 1:  # in parallel: a probe must answer within its timeout however many are down
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(self.replicas))) as pool:
                list(pool.map(lambda r: self.check(r, force=force), self.replicas))
        else:
            self.check(self.replicas[0], force=force)
        out = []
        for replica in self.replicas:
            out.append({"url": replica.url, "up": bool(replica.up), "error": replica.error,
                        "in_flight": replica.in_flight, "dispatched": replica.dispatched,
                        "busy": replica.health.get("busy"), "engine": replica.health.get("engine"),
                        "device": replica.health.get("device")})
        return out

    def _mark_down(self, replica: Replica, reason: str) -> None:
        with self._lock:
            replica.up, replica.error, replica.checked_at = False, reason, time.monotonic()

    # -- dispatch --------------------------------------------------------------------------------------------

    def _pick(self, exclude: set[str]) -> Replica | None:
        candidates = [r for r in self.replicas if r.url not in exclude]
        live = [r for r in candidates if self.check(r)]
        if not live:  # cached answers may be stale: ask once more before giving up
            live = [r for r in candidates if self.check(r, force=True)]
        if not live:
            return None
        with self._lock:
            n = len(self.replicas)
            order = {r.url: (i - self._turn) % n for i, r in enumerate(self.replicas)}
            self._turn += 1
            best = min(live, key=lambda r: (r.in_flight, int(r.health.get("running") or 0), order[r.url]))
            best.in_flight += 1
            best.dispatched += 1
        return best

    def preview(self, image: Path, options: GenerationOptions) -> dict[str, Any]:
        """The portrait's face and framing from one live replica (see ModelClient.preview)."""
        replica = self._pick(set())
        if replica is None:
            raise ModelUnavailableError("no model service is reachable for the preview")
        try:
            return replica.client.preview(image, options)
        finally:
            with self._lock:
                replica.in_flight -= 1

    records_attempts = True  # the worker passes `on_attempt` to clients that say this

    def generate(self, image: Path, audio: Path, options: GenerationOptions, output: Path,
                 progress: ProgressFn, on_attempt: Callable[[Attempt], None] | None = None) -> ModelOutcome:
        record = on_attempt or (lambda attempt: None)
        single = len(self.replicas) == 1  # one URL (e.g. a Kubernetes Service): a retry may reach another pod
        tried: list[str] = []
        last: ModelError | None = None
        for number in range(1, self.retries + 2):
            replica = self._pick(set() if single else set(tried))
            if replica is None:
                break
            tried.append(replica.url)
            if last is not None:
                logger.info("retrying on %s after: %s", replica.url, last)
            attempt = Attempt(number=number, replica=replica.url, started_at=time.time())
            record(attempt)
            try:
                outcome = replica.client.generate(image, audio, options, output, progress)
            except ModelUnavailableError as exc:
                attempt.outcome, attempt.error, attempt.finished_at = "failed", str(exc), time.time()
                record(attempt)
                self._mark_down(replica, str(exc))
                last = exc
                continue
            except ModelError as exc:  # the inputs were refused: another replica would refuse them too
                attempt.outcome, attempt.error, attempt.finished_at = "failed", str(exc), time.time()
                record(attempt)
                raise
            finally:
                with self._lock:
                    replica.in_flight -= 1
            attempt.outcome, attempt.finished_at = "done", time.time()
            record(attempt)
            return ModelOutcome(engine=outcome.engine)
        if last is not None and len(tried) > 1:
            raise ModelUnavailableError(f"{last} (tried {len(tried)} times: {', '.join(tried)})")
        if last is not None:
            raise last
        down = "; ".join(f"{r.url} ({r.error})" for r in self.replicas)
        raise ModelUnavailableError(f"the model service is unreachable at {down}")
