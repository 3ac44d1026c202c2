"""The task queue (Dramatiq, Redis as the broker): the `generate` queue that model workers pull from, one job at a
time, and the `webhooks` queue the fronts deliver from. The broker acknowledges a message only after its actor
returns, so a job whose worker dies is delivered again (after QUEUE_HEARTBEAT_SECONDS without a heartbeat from
that worker); a model-service error is retried with exponential backoff (QUEUE_MAX_RETRIES), an input error never;
a job running past its time limit is stopped (MODEL_TIMEOUT_SECONDS plus a margin).

`QUEUE_URL=memory://` keeps everything in one process (Dramatiq's stub broker and worker threads in the front):
for tests and a quick try, not for production (a stopped front loses what was queued)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import dramatiq
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit

from .config import Config

logger = logging.getLogger(__name__)

GENERATE_QUEUE = "generate"
WEBHOOK_QUEUE = "webhooks"
TIME_LIMIT_MARGIN_SECONDS = 120  # the queue's hard limit is the model client's own timeout plus this
HEARTBEAT_FRACTION = 0.25  # a worker renews its heartbeat this often (of QUEUE_HEARTBEAT_SECONDS)


class RetryLater(dramatiq.Retry):
    """Raised by an actor for a failure worth trying again (the model service was unreachable or failed): the
    queue's Retries middleware enqueues the message again after a backoff (exponential, with jitter)."""


def retry_when(retries: int, exception: BaseException) -> bool:
    """Only RetryLater is retried; the actors raise it only while tries are left (see current_retries)."""
    return isinstance(exception, RetryLater)


def current_retries() -> int:
    """How many times the message being processed has been retried (0 on its first delivery)."""
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def is_memory(url: str) -> bool:
    return url.startswith("memory://")


def make_broker(config: Config) -> dramatiq.Broker:
    middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), CurrentMessage(),
                  Retries(min_backoff=int(config.queue_min_backoff_seconds * 1000),
                          max_backoff=int(config.queue_max_backoff_seconds * 1000), retry_when=retry_when)]
    if is_memory(config.queue_url):
        from dramatiq.brokers.stub import StubBroker

        return StubBroker(middleware=middleware)
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=config.queue_url, namespace=config.queue_namespace, middleware=middleware,
                       heartbeat_timeout=int(config.queue_heartbeat_seconds * 1000),
                       maintenance_chance=config.queue_maintenance_chance)


@dataclass
class QueueStats:
    queued: int          # messages waiting in the generate queue (what KEDA scales on)
    delayed: int | None  # retries waiting for their backoff (Redis only)
    workers: int         # model workers with a fresh heartbeat


class JobQueue:
    """One broker and its two actors. The front enqueues (`send_job`, `send_webhook`); a model worker process
    (DemoFront/worker.py) consumes `generate` with `handle_jobs`; fronts consume `webhooks` with
    `handle_webhooks`. Handlers are set by whoever consumes; actors only name them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.broker = make_broker(config)
        self._handlers: dict[str, Callable[..., None]] = {}
        limit_ms = int((config.model_timeout_seconds + TIME_LIMIT_MARGIN_SECONDS) * 1000)
        self.generate = dramatiq.Actor(self._dispatch("generate"), broker=self.broker, actor_name="generate",
                                       queue_name=GENERATE_QUEUE, priority=0,
                                       options={"time_limit": limit_ms, "max_retries": config.queue_max_retries})
        self.webhook = dramatiq.Actor(self._dispatch("webhook"), broker=self.broker, actor_name="deliver_webhook",
                                      queue_name=WEBHOOK_QUEUE, priority=0,
                                      options={"time_limit": 60_000, "max_retries": config.webhook_max_retries})
        self._workers: list[dramatiq.Worker] = []
        self._heartbeat_stop = threading.Event()

    def _dispatch(self, name: str) -> Callable[..., None]:
        def run(*args: Any) -> None:
            handler = self._handlers.get(name)
            if handler is None:
                raise RuntimeError(f"this process does not handle {name} messages")
            handler(*args)

        run.__name__ = name
        return run

    # -- producing ---------------------------------------------------------------------------------------------

    def job_message(self, job_id: str) -> dramatiq.Message:
        """The message for a job, made before it is sent so its id can be stored on the row first."""
        return self.generate.message(job_id)

    def send(self, message: dramatiq.Message) -> None:
        self.broker.enqueue(message)

    def send_webhook(self, job_id: str) -> None:
        self.webhook.send(job_id)

    # -- consuming ---------------------------------------------------------------------------------------------

    def consume(self, jobs: Callable[[str], None] | None = None, webhooks: Callable[[str], None] | None = None,
                threads: int = 1) -> dramatiq.Worker:
        """Consume in this process (once): `jobs` takes the generate queue (a model worker: one thread per
        replica), `webhooks` the webhooks queue (a front). No message is prefetched beyond the threads, so a
        busy worker leaves waiting jobs to free ones."""
        if self._workers:
            raise RuntimeError("this process already consumes from the queue")
        queues = set()
        if jobs is not None:
            self._handlers["generate"] = jobs
            queues.add(GENERATE_QUEUE)
        if webhooks is not None:
            self._handlers["webhook"] = webhooks
            queues.add(WEBHOOK_QUEUE)
        worker = dramatiq.Worker(self.broker, queues=queues, worker_threads=threads, worker_timeout=250)
        worker.queue_prefetch = threads  # Dramatiq's default is twice the threads: jobs would wait on a busy worker
        worker.start()
        self._workers.append(worker)
        if jobs is not None and not is_memory(self.config.queue_url):
            threading.Thread(target=self._heartbeat, name="queue-heartbeat", daemon=True).start()
        return worker

    def _heartbeat(self) -> None:
        """Keep this worker's Redis heartbeat fresh while a long job runs (Dramatiq renews it only when it
        fetches, and a worker busy with its one job does not fetch), and advertise the worker for the queue
        estimates. A worker that dies stops both; its unacknowledged job then goes back to the queue."""
        interval = max(0.2, self.config.queue_heartbeat_seconds * HEARTBEAT_FRACTION)
        key = f"{self.config.queue_namespace}:demofront:worker:{self.config.worker_name}"
        ttl_ms = max(1000, int(self.config.queue_heartbeat_seconds * 1000))
        while not self._heartbeat_stop.wait(interval):
            try:
                self.broker.do_qsize(GENERATE_QUEUE)  # any broker command renews this process's heartbeat
                self.broker.client.set(key, str(time.time()), px=ttl_ms)
            except Exception as exc:  # Redis away: the worker's own fetches will say so; keep trying
                logger.warning("queue heartbeat failed: %s", exc)

    def stats(self) -> QueueStats:
        if is_memory(self.config.queue_url):
            queue = self.broker.queues.get(GENERATE_QUEUE)
            return QueueStats(queued=queue.qsize() if queue is not None else 0, delayed=None,
                              workers=self.config.workers)
        client = self.broker.client
        ns = self.config.queue_namespace
        queued = int(client.llen(f"{ns}:{GENERATE_QUEUE}"))
        delayed = int(client.llen(f"{ns}:{GENERATE_QUEUE}.DQ"))
        workers = sum(1 for _ in client.scan_iter(f"{ns}:demofront:worker:*", count=100))
        return QueueStats(queued=queued, delayed=delayed, workers=workers)

    def close(self, grace_seconds: float = 5.0) -> None:
        """Stop consuming: running actors get `grace_seconds` to finish (the heartbeat goes on meanwhile); one still
        running then dies with the process, unacknowledged, and its message is delivered again elsewhere."""
        for worker in self._workers:
            worker.stop(timeout=int(grace_seconds * 1000))
        self._workers.clear()
        self._heartbeat_stop.set()
        self.broker.close()
