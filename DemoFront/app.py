"""Entry point of the web front: `python DemoFront/app.py` serves on FRONT_HOST:FRONT_PORT (default
127.0.0.1:5000) and finds the model service through SADTALKER_URL."""
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

logger = logging.getLogger("demofront.app")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = Config.from_env()
    app = create_app(config)
    from werkzeug.serving import make_server

    server = make_server(config.host, config.port, app, threaded=True)
    signal.signal(signal.SIGTERM, _stop)
    logger.info("web front on http://%s:%d/ (model service: %s)", config.host, config.port, config.sadtalker_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        runner = app.extensions["demofront"].runner
        runner.shutdown(wait=False)  # queued jobs stay queued and run at the next start (of any front)
        runner.abandon()  # running ones are failed now, not left 'running' by a front that is gone


if __name__ == "__main__":
    main()
