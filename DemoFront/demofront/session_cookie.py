"""The session cookie's Secure flag: SESSION_COOKIE_SECURE=true / false, or auto (the default): set when the
request came over HTTPS, directly or, with TRUSTED_PROXIES, as the proxy's X-Forwarded-Proto says."""
from __future__ import annotations

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface


class SessionInterface(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        setting = app.config["FRONT"].session_cookie_secure
        if setting == "auto":
            return has_request_context() and request.is_secure
        return setting == "true"
