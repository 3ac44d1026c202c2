"""Accounts: sign-up/sign-in with hashed passwords (werkzeug's scrypt), sessions with a CSRF token, and per-user
API keys sent as `Authorization: Bearer <key>`."""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import secrets
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import (Blueprint, abort, Response, current_app, flash, g, jsonify, redirect, render_template, request,
                   session, url_for)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .errors import ApiError, wants_json
from .models import ApiKey, User, utcnow

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
MIN_PASSWORD = 8
KEY_PREFIX = "dfk_"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def front() -> Any:
    return current_app.extensions["demofront"]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def load_user() -> None:
    """Before each request: who is asking (API key first, then the session) and, for cookie-authenticated
    changes, a valid CSRF token."""
    g.user, g.auth_via = None, None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Authorization must be 'Bearer <API key>'")
        with front().db.session() as s:
            key = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(token.strip())))
            if key is None or key.revoked_at is not None:
                raise ApiError(401, "the API key is unknown or revoked")
            key.last_used_at = utcnow()
            g.user = s.get(User, key.user_id)
            g.api_key_id = key.id
        g.auth_via = "key"
        return
    user_id = session.get("user_id")
    if user_id is not None:
        with front().db.session() as s:
            g.user = s.get(User, user_id)
        if g.user is None or g.user.session_generation != session.get("generation", 0):
            g.user = None  # the account is gone, or signed out since this cookie was made
            session.pop("user_id", None)
            session.pop("generation", None)
        else:
            g.auth_via = "session"
    if request.method in UNSAFE_METHODS and request.endpoint != "static":
        # Pages always carry the token; the API needs it only when a session cookie is what authenticates.
        if not wants_json() or g.auth_via == "session":
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
            expected = session.get("csrf", "")
            if not expected or not hmac.compare_digest(sent, expected):
                raise ApiError(400, "the form's CSRF token is missing or stale; reload the page and try again",
                               field="csrf_token")


def require_user() -> User:
    """The signed-in user, or 401 (API) / a redirect to sign-in (pages)."""
    if g.user is None:
        if wants_json():
            raise ApiError(401, "sign in or send an API key (Authorization: Bearer <key>)")
        abort(redirect(url_for("auth.login", next=request.full_path.rstrip("?")), 303))
    return g.user


def require_user_or_anonymous() -> User | None:
    if g.user is None and not front().config.allow_anonymous:
        require_user()
    return g.user


# -- pages -------------------------------------------------------------------------------------------------------

@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Any:
    if request.method == "GET":
        return render_template("signup.html")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    error = None
    if not USERNAME.match(username):
        error = "username: 3-64 letters, digits, '.', '_' or '-'"
    elif len(password) < MIN_PASSWORD:
        error = f"password: at least {MIN_PASSWORD} characters"
    if error is None:
        user = User(username=username, password_hash=generate_password_hash(password),
                    is_admin=username in front().config.admin_users, created_at=utcnow(), session_generation=0)
        try:
            with front().db.session() as s:
                s.add(user)
        except IntegrityError:
            error = "username: that name is taken"
    if error is not None:
        return render_template("signup.html", error=error, username=username), 400
    _sign_in(user)
    return redirect(url_for("pages.index"), 303)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Failed attempts are limited per account name and per client address (rate_limits.py). An unknown name
    costs the same password hash as a wrong password and gets the same answer."""
    next_path = local_path(request.values.get("next", ""))
    if request.method == "GET":
        return render_template("login.html", next=next_path or "")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    with front().db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
    stored_hash = user.password_hash if user is not None else _dummy_hash()
    if not check_password_hash(stored_hash, password) or user is None:
        return render_template("login.html", error="wrong username or password", username=username,
                               next=next_path or ""), 400
    _sign_in(user)
    return redirect(next_path or url_for("pages.index"), 303)


@functools.cache
def _dummy_hash() -> str:
    """A hash made like real ones (werkzeug's default method), checked when the name is unknown."""
    return generate_password_hash(secrets.token_urlsafe(16))


def local_path(target: str) -> str | None:
    """`target` if it is a path on this site ('/history?page=2'), else None. Refuses what a browser may read as
    another host: '//host', '/\\host', schemes, and any control character or space (browsers drop tabs and
    newlines, so '/<tab>/host' becomes '//host'), also once percent-decoded ('/%09/host', '/%2F/host')."""
    if not target or len(target) > 2000:
        return None
    for form in (target, unquote(target)):
        if not form.startswith("/") or form.startswith("//"):
            return None
        if any(ord(c) < 0x21 or c in "\\\x7f" for c in form):
            return None
        parts = urlsplit(form)
        if parts.scheme or parts.netloc:
            return None
    return target


@bp.post("/logout")
def logout() -> Any:
    """Ends every session of the account (the generation on its row moves on), then this browser's."""
    if g.user is not None and g.auth_via == "session":
        with front().db.session() as s:
            user = s.get(User, g.user.id)
            if user is not None:
                user.session_generation += 1
    session.clear()
    return redirect(url_for("pages.index"), 303)


def _sign_in(user: User) -> None:
    session.clear()
    session["user_id"] = user.id
    session["generation"] = user.session_generation
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True


@bp.route("/keys", methods=["GET", "POST"])
def keys_page() -> Any:
    user = require_user()
    new_key = new_secret = None
    if request.method == "POST":
        new_key, made = create_key(user, request.form.get("name", ""))
        new_secret = made.webhook_secret
    return render_template("keys.html", keys=list_keys(user), new_key=new_key, new_secret=new_secret)


@bp.post("/keys/<int:key_id>/revoke")
def revoke_key_page(key_id: int) -> Any:
    revoke_key(require_user(), key_id)
    flash("API key revoked")
    return redirect(url_for("auth.keys_page"), 303)


# -- API keys ----------------------------------------------------------------------------------------------------

def create_key(user: User, name: str) -> tuple[str, ApiKey]:
    name = name.strip()[:100] or "key"
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(user_id=user.id, name=name, prefix=secret[:12], key_hash=hash_key(secret), created_at=utcnow(),
                 webhook_secret="whsec_" + secrets.token_urlsafe(32))
    with front().db.session() as s:
        s.add(key)
    return secret, key


def list_keys(user: User) -> list[ApiKey]:
    with front().db.session() as s:
        return list(s.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc())))


def revoke_key(user: User, key_id: int) -> ApiKey:
    if not 0 < key_id < 2**31:  # the id column's range: a larger number is no key, not a database error
        raise ApiError(404, f"no API key {key_id}")
    with front().db.session() as s:
        key = s.get(ApiKey, key_id)
        if key is None or key.user_id != user.id:
            raise ApiError(404, f"no API key {key_id}")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        return key


def key_to_dict(key: ApiKey) -> dict[str, Any]:
    from .jobs import iso

    return {"id": key.id, "name": key.name, "prefix": key.prefix, "created_at": iso(key.created_at),
            "last_used_at": iso(key.last_used_at), "revoked_at": iso(key.revoked_at),
            "active": key.revoked_at is None}


@bp.get("/api/keys")
def api_list_keys() -> Response:
    return jsonify({"keys": [key_to_dict(k) for k in list_keys(require_user())]})


@bp.post("/api/keys")
def api_create_key() -> Any:
    body = request.get_json(silent=True) or request.form
    secret, key = create_key(require_user(), str(body.get("name", "")))
    # both secrets are shown this once: the key (only its hash is kept) and the webhook signing secret
    return jsonify({**key_to_dict(key), "key": secret, "webhook_secret": key.webhook_secret}), 201


@bp.delete("/api/keys/<int:key_id>")
def api_revoke_key(key_id: int) -> Response:
    return jsonify(key_to_dict(revoke_key(require_user(), key_id)))
