"""Webhooks: when a job with a `callback_url` ends, a front POSTs the job's JSON there, signed with the API key's
webhook secret, retried with backoff by the queue (`webhooks` queue, WEBHOOK_MAX_RETRIES), the outcome recorded on
the job. Only http(s) URLs; loopback, private, link-local and other non-public addresses are refused unless
WEBHOOK_ALLOW_PRIVATE is set (checked when the job is made and again before each delivery).

Signature: `X-DemoFront-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>`."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from .errors import ApiError
from .models import ApiKey, Job, utcnow
from .tasks import RetryLater, current_retries

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-DemoFront-Signature"
MAX_URL_LENGTH = 2048


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance_seconds: float = 300) -> bool:
    """What a receiver does (and the tests): recompute the signature and compare in constant time."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def check_callback_url(url: str, allow_private: bool) -> str:
    """The URL if a webhook may be sent there; ApiError(400) naming the field otherwise."""
    def refuse(why: str) -> ApiError:
        return ApiError(400, f"callback_url: {why}", field="callback_url")

    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"at most {MAX_URL_LENGTH} characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise refuse("must not carry a user name or password")
    if not allow_private:
        for address in _addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)):
            if not address.is_global:
                raise refuse(f"{parts.hostname} is a loopback, private or reserved address ({address}); webhooks "
                             "go to public addresses only")
    return url


def _addresses(host: str, port: int) -> list[Any]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ApiError(400, f"callback_url: the host {host} cannot be resolved ({exc})", field="callback_url")
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # a redirect could lead to a private address
        return None


class WebhookSender:
    """The `webhooks` queue's handler: `__call__(job_id)` delivers once or raises RetryLater."""

    def __init__(self, db: Any, describe: Callable[[Job], dict[str, Any]], max_retries: int, timeout: float,
                 allow_private: bool) -> None:
        self.db, self.describe = db, describe
        self.max_retries, self.timeout, self.allow_private = max_retries, timeout, allow_private
        self._opener = urllib.request.build_opener(_NoRedirects)

    def __call__(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or not job.callback_url or job.webhook_status == "delivered":
                return
            key = s.get(ApiKey, job.api_key_id) if job.api_key_id is not None else None
            secret = key.webhook_secret if key is not None else None
            body = json.dumps({"event": "job.ended", "job": self.describe(job)}, sort_keys=True).encode()
            url = job.callback_url
        if not secret:
            self._record(job_id, "failed", "the API key that made the job is gone; nothing to sign with")
            return
        error = self._post(url, body, secret)
        if error is None:
            self._record(job_id, "delivered", None)
            logger.info("job %s: webhook delivered to %s", job_id, url)
            return
        retries = current_retries()
        if retries < self.max_retries:
            self._record(job_id, "pending", f"{error}; retry {retries + 1} of {self.max_retries}")
            raise RetryLater(error)
        self._record(job_id, "failed", f"{error} (tried {retries + 1} times)")
        logger.warning("job %s: webhook to %s failed: %s", job_id, url, error)

    def _post(self, url: str, body: bytes, secret: str) -> str | None:
        try:
            check_callback_url(url, self.allow_private)
        except ApiError as exc:
            return exc.message
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "DemoFront-Webhook/1",
            SIGNATURE_HEADER: sign(secret, int(time.time()), body)})
        try:
            with self._opener.open(request, timeout=self.timeout) as reply:
                if 200 <= reply.status < 300:
                    return None
                return f"the receiver answered HTTP {reply.status}"
        except urllib.error.HTTPError as exc:
            return f"the receiver answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"the receiver is unreachable ({type(exc).__name__}: {str(exc)[:160]})"

    def _record(self, job_id: str, status: str, error: str | None) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            job.webhook_status, job.webhook_error = status, error
            job.webhook_attempts = (job.webhook_attempts or 0) + 1
            if status == "delivered":
                job.webhook_delivered_at = utcnow()
