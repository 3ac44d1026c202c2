"""Entry point of a model worker: `python DemoFront/worker.py` takes jobs from the task queue (QUEUE_URL), one at
a time, and runs each on the model service at SADTALKER_URL through gradio_client, writing progress and outcome to
the jobs table (DATABASE_URL, files under DATA_DIR). Run one per model replica (in Kubernetes: a container beside
the model service in its pod). SIGTERM: stop taking jobs; the one running may finish within STOP_GRACE_SECONDS,
else it goes back to the queue (delivered again once this worker's heartbeat is missed)."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "SadTalker"))

from demofront.config import Config  # noqa: E402
from demofront.db import Database  # noqa: E402
from demofront.model_client import ModelClient  # noqa: E402
from demofront.models import Job  # noqa: E402
from demofront.storage import Storage  # noqa: E402
from demofront.tasks import JobQueue  # noqa: E402
from demofront.worker import JobWorker  # noqa: E402

logger = logging.getLogger("demofront.worker_main")
STOP_GRACE_SECONDS = 90  # within Kubernetes' terminationGracePeriodSeconds for the model pod (120)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = Config.from_env()
    db = Database(config.database_url)
    db.upgrade()
    storage = Storage(config.data_dir)
    queue = JobQueue(config)

    def ended(job_id: str) -> None:
        with db.session() as s:
            job = s.get(Job, job_id)
            has_callback = job is not None and job.callback_url is not None
        if has_callback:
            queue.send_webhook(job_id)

    client = ModelClient(config.sadtalker_url, timeout=config.model_timeout_seconds)
    worker = JobWorker(db, storage, client, config.queue_max_retries, on_end=ended, name=config.worker_name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    queue.consume(jobs=worker, threads=1)
    logger.info("worker %s: jobs from the queue to the model service at %s", config.worker_name,
                config.sadtalker_url)
    stop.wait()
    logger.info("worker %s stopping", config.worker_name)
    queue.close(grace_seconds=STOP_GRACE_SECONDS)
    db.dispose()


if __name__ == "__main__":
    main()
