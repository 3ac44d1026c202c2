"""Entry point of the web front: `python DemoFront/app.py` serves on FRONT_HOST:FRONT_PORT (default
127.0.0.1:5000) with the production server (waitress, see demofront/server.py) and puts jobs on the task queue at
QUEUE_URL, where model workers (DemoFront/worker.py) take them. `make run` and the Docker image start it the same
way."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "SadTalker"))  # the model library's validators, so both sides agree

from demofront import create_app  # noqa: E402
from demofront.config import Config  # noqa: E402
from demofront.server import make_server  # noqa: E402

logger = logging.getLogger("demofront.app")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = Config.from_env()
    app = create_app(config)  # one app per process: it delivers webhooks from the queue (see demofront/server.py)
    server = make_server(app, config)
    signal.signal(signal.SIGTERM, _stop)
    logger.info("web front on http://%s:%d/ (waitress, %d threads)", config.host, config.port,
                config.server_threads)
    try:
        server.run()  # returns on SIGINT / SIGTERM
    finally:
        server.close()
        app.extensions["demofront"].close()  # jobs live in the queue and the workers: nothing to hand over


if __name__ == "__main__":
    main()
