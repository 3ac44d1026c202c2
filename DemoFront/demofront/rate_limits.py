"""Request rate limits with Flask-Limiter: generation requests per account (or client address), failed sign-ins
per account name and per client address, sign-up attempts per client address. Every request to a limited route
counts, refused uploads too; sign-ins count only when they fail. The counters live in RATELIMIT_STORAGE_URI
(memory://: per front process)."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

from flask import Flask, Response, g, request
from flask_limiter import Limiter

from .config import Config, limit_string, parse_rate_limit

logger = logging.getLogger(__name__)

GENERATE_ENDPOINTS = ("api.generate", "pages.submit", "pages.again")


def client_address() -> str:
    """The client's address (the proxy's forwarded one when TRUSTED_PROXIES is set; see create_app)."""
    return request.remote_addr or "unknown"


def account_or_address() -> str:
    user = g.get("user")
    return f"user:{user.id}" if user is not None else f"addr:{client_address()}"


def login_account() -> str:
    return "account:" + request.form.get("username", "").strip()[:64]


def failed_sign_in(response: Response) -> bool:
    return response.status_code == 400  # a wrong name or password; success is a 303


def _describe(text: str, what: str) -> str:
    count, window = parse_rate_limit(text) or (0, 0.0)
    return f"rate limit reached: at most {count} {what} per {window:g} s"


def install_rate_limits(app: Flask, config: Config) -> Limiter:
    """Attach a Limiter to `app` and wrap the limited views (called after the blueprints are registered)."""
    limiter = Limiter(key_func=client_address, app=app, storage_uri=config.ratelimit_storage_uri,
                      strategy="moving-window", headers_enabled=False)

    def wrap(endpoint: str, decorate: Callable) -> None:
        app.view_functions[endpoint] = decorate(app.view_functions[endpoint])

    if (rate := limit_string(config.rate_limit)) is not None:
        shared = limiter.shared_limit(rate, scope="generate", key_func=account_or_address,
                                      error_message=_describe(config.rate_limit, "generations"))
        for endpoint in GENERATE_ENDPOINTS:
            wrap(endpoint, shared)
    if (rate := limit_string(config.login_limit_per_account)) is not None:
        wrap("auth.login", limiter.limit(rate, key_func=login_account, methods=["POST"],
                                         deduct_when=failed_sign_in,
                                         error_message=_describe(config.login_limit_per_account,
                                                                 "failed sign-ins for this account")))
    if (rate := limit_string(config.login_limit_per_address)) is not None:
        wrap("auth.login", limiter.limit(rate, key_func=client_address, methods=["POST"], deduct_when=failed_sign_in,
                                         error_message=_describe(config.login_limit_per_address,
                                                                 "failed sign-ins from your address")))
    if (rate := limit_string(config.signup_limit_per_address)) is not None:
        wrap("auth.signup", limiter.limit(rate, key_func=client_address, methods=["POST"],
                                          error_message=_describe(config.signup_limit_per_address,
                                                                  "sign-ups from your address")))
    return limiter


def retry_after_seconds(limiter: Limiter) -> int:
    """Seconds until the breached limit lets one more request through (at least 1)."""
    current = limiter.current_limit
    if current is None:
        return 1
    return max(1, math.ceil(current.window.reset_time - time.time()))
