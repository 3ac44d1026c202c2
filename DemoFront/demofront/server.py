"""The production HTTP server for the front: waitress, one process with a pool of request threads.

One process, because the app runs its own background threads (webhook deliveries from the queue and the retention
sweeper, started by create_app); jobs themselves run in the model workers (DemoFront/worker.py). waitress reads request
headers and bodies in its event loop and hands a request to a thread only once it is complete, so a slow or
stalled client holds a socket, never a thread; a connection with no request in progress is closed after
READ_TIMEOUT_SECONDS of silence (a half-sent header included)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from .config import Config

logger = logging.getLogger(__name__)

SERVER_NAME = "waitress"  # the Server header
CLEANUP_INTERVAL_SECONDS = 1  # how often idle connections are looked at (the timeout's granularity)


def make_server(app: Flask, config: Config, port: int | None = None) -> Any:
    """A bound, not yet running, waitress server for `app` (`port` 0 picks a free one)."""
    from waitress import create_server

    return create_server(
        app,
        host=config.host,
        port=config.port if port is None else port,
        threads=config.server_threads,
        channel_timeout=max(1, round(config.read_timeout_seconds)),
        cleanup_interval=CLEANUP_INTERVAL_SECONDS,
        # waitress spools bodies to temporary files; refuse early what the app would refuse anyway (the app's own
        # 413 answers in JSON up to twice the limit, so clients near the limit get the usual error)
        max_request_body_size=2 * config.max_upload_bytes + 1024 * 1024,
        connection_limit=max(100, 4 * config.server_threads),
        # forwarded headers are the app's business (ProxyFix with TRUSTED_PROXIES), not waitress's
        clear_untrusted_proxy_headers=False,
        ident=SERVER_NAME,
    )
