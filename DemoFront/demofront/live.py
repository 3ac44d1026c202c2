"""The live page (`/live`): pick a portrait, allow the microphone, and the portrait speaks what you say.

The page talks to the model service's live WebSocket (LIVE_URL, by default the first model service's `/live/ws`;
protocol in sadtalker/service/live.py and the README): 16 kHz PCM from an AudioWorklet in, JPEG frames out at
25 fps, drawn on a canvas. The frames are made where the landmark engine runs, so the socket goes there; the
front serves the page, allows its microphone and names that socket in the page's Content-Security-Policy.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, make_response, render_template

from . import SECURITY_HEADERS

bp = Blueprint("live", __name__)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@bp.get("/live")
def live_page() -> Response:
    config: Any = current_app.extensions["demofront"].config
    socket = config.live_ws_url
    from .examples import PORTRAITS

    response = make_response(render_template("live.html", live_url=socket, portraits=PORTRAITS))
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = (
        csp.replace("default-src 'self';", f"default-src 'self'; connect-src 'self' {_origin(socket)};")
        .replace("img-src 'self' data:;", "img-src 'self' data: blob:;"))
    response.headers["Permissions-Policy"] = "camera=(), microphone=(self), geolocation=()"
    return response
