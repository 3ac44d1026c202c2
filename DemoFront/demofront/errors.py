"""Errors the front answers with: JSON for /api/*, an HTML page elsewhere, from one handler."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the front refuses: an HTTP status, a message a person can act on, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.headers = headers or {}
        self.extra = extra or {}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def error_response(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> Response:
    if wants_json():
        body: dict[str, Any] = {"error": message, "status": status}
        if field:
            body["field"] = field
        body.update(extra or {})
        response = jsonify(body)
    else:
        response = Response(render_template("error.html", status=status, message=message, field=field),
                            mimetype="text/html")
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def too_large_message(max_upload_mb: float, max_field_bytes: int) -> str:
    """Which limit a 413 hit: the whole request's (its Content-Length says so), else one text field's (werkzeug
    refuses a form field past MAX_FORM_MEMORY_SIZE); a streamed request without a length names both."""
    field = f"{max_field_bytes / (1024 * 1024):g} MB" if max_field_bytes >= 1024 * 1024 else f"{max_field_bytes} bytes"
    whole = f"the upload is too large (the limit is {max_upload_mb:g} MB for the whole request)"
    if request.content_length is not None and request.content_length > max_upload_mb * 1024 * 1024:
        return whole
    if request.content_length is not None:
        return f"a form field is too large (the limit is {field} per text field; files are sent as file fields)"
    return f"{whole}, or a form field is larger than {field}"


def register_error_handlers(app: Flask) -> None:
    from flask_limiter import RateLimitExceeded

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.field, exc.headers, exc.extra)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded) -> Response:
        from .rate_limits import retry_after_seconds

        retry = retry_after_seconds(app.extensions["demofront"].limiter)
        return error_response(429, f"{exc.description}; try again in {retry} s", headers={"Retry-After": str(retry)})

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if exc.response is not None:  # abort(redirect(...)) and the like
            return exc.response
        status = exc.code or 500
        if status == 413:
            message = too_large_message(app.config["FRONT"].max_upload_mb, app.config["MAX_FORM_MEMORY_SIZE"])
        else:
            message = exc.description or exc.name
        return error_response(status, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error: the front could not answer this request")
