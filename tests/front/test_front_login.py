"""Sign-in hardening: failed attempts limited per account and per client address (429 with Retry-After), the
same cost and answer for an unknown name as for a wrong password, `next` restricted to this site, sign-out that
ends the session on the server, the session cookie's Secure flag, and sign-ups limited per address.
Runs on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL."""
from __future__ import annotations

import statistics
import time

import pytest
from front_support import csrf_of, db_kind, make_app, sign_up  # noqa: F401

PASSWORD = "correct horse 1"


def login(client, username: str, password: str, next_path: str | None = None):
    data = {"username": username, "password": password, "csrf_token": csrf_of(client)}
    if next_path is not None:
        data["next"] = next_path
    return client.post("/login", data=data)


def test_forty_wrong_passwords_do_not_end_in_a_sign_in(make_app):
    """The issue's attack with the default settings: the limit answers 429 long before the 40th attempt, and
    then even the right password is refused until the window passes."""
    app = make_app()  # LOGIN_LIMIT_PER_ACCOUNT: 10 failures per 15 minutes
    sign_up(app.test_client(), "victim", PASSWORD)
    attacker = app.test_client()
    statuses = [login(attacker, "victim", f"guess {i}").status_code for i in range(40)]
    assert statuses[:10] == [400] * 10 and set(statuses[10:]) == {429}
    reply = login(attacker, "victim", PASSWORD)
    assert reply.status_code == 429 and reply.mimetype == "text/html"
    assert 1 <= int(reply.headers["Retry-After"]) <= 15 * 60
    assert "failed sign-ins for this account" in reply.get_data(as_text=True)


def test_login_limits_per_account_and_per_address(make_app):
    app = make_app(login_limit_per_account="3/minute", login_limit_per_address="5/minute")
    for name in ("ann", "bob"):
        sign_up(app.test_client(), name, PASSWORD)
    web = app.test_client()
    assert [login(web, "ann", "wrong").status_code for _ in range(3)] == [400] * 3
    assert login(web, "ann", PASSWORD).status_code == 429
    # another account from the same address has its own allowance, but the address has one too
    assert login(web, "bob", PASSWORD).status_code == 303  # success does not count
    assert [login(web, "bob", "wrong").status_code for _ in range(2)] == [400, 400]
    reply = login(web, "carol-unknown", "wrong")  # the address's 6th failure
    assert reply.status_code == 429 and "from your address" in reply.get_data(as_text=True)
    assert 1 <= int(reply.headers["Retry-After"]) <= 60


def test_unknown_user_and_wrong_password_take_the_same_time_and_answer(make_app):
    app = make_app(login_limit_per_account="off", login_limit_per_address="off")
    sign_up(app.test_client(), "known", PASSWORD)
    web = app.test_client()
    login(web, "nobody", "x")  # the dummy hash is made once; not part of the measure

    def timed(username: str) -> tuple[float, object]:
        started = time.perf_counter()
        reply = login(web, username, "not the password")
        return time.perf_counter() - started, reply

    samples: dict[str, list[float]] = {"unknown": [], "wrong": []}
    replies = {}
    for _ in range(5):
        for kind, name in (("unknown", "nobody"), ("wrong", "known")):
            seconds, replies[kind] = timed(name)
            samples[kind].append(seconds)
    unknown, wrong = statistics.median(samples["unknown"]), statistics.median(samples["wrong"])
    print(f"\nlogin: unknown user {unknown * 1000:.1f} ms, wrong password {wrong * 1000:.1f} ms (medians of 5)")
    assert max(unknown, wrong) / min(unknown, wrong) < 3
    assert replies["unknown"].status_code == replies["wrong"].status_code == 400
    for reply in replies.values():
        assert "wrong username or password" in reply.get_data(as_text=True)


@pytest.mark.parametrize("target", ["/\t/evil.com", "//evil.com", "https://evil.com", "/\\evil.com", "/%09/evil.com",
                                    "/ /evil.com", "javascript:alert(1)", "http:/evil.com"])
def test_next_accepts_only_paths_on_this_site(make_app, target):
    app = make_app()
    sign_up(app.test_client(), "walker", PASSWORD)
    web = app.test_client()
    reply = login(web, "walker", PASSWORD, next_path=target)
    assert reply.status_code == 303 and reply.headers["Location"] == "/", reply.headers["Location"]


def test_next_keeps_a_local_path_through_the_sign_in_page(make_app):
    app = make_app()
    sign_up(app.test_client(), "walker", PASSWORD)
    web = app.test_client()
    page = web.get("/login?next=%2Fhistory%3Fpage%3D2").get_data(as_text=True)
    assert 'name="next" value="/history?page=2"' in page
    assert 'value="/\t/evil.com"' not in web.get("/login?next=/%09/evil.com").get_data(as_text=True)
    assert login(web, "walker", PASSWORD, next_path="/history?page=2").headers["Location"] == "/history?page=2"


def test_a_session_is_invalid_after_sign_out(make_app):
    app = make_app()
    web = app.test_client()
    sign_up(web, "leaver", PASSWORD)
    stolen = web.get_cookie("session").value
    assert web.get("/api/jobs").status_code == 200
    assert web.post("/logout", data={"csrf_token": csrf_of(web)}).status_code == 303
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/api/jobs").status_code == 401  # the old cookie was signed, but its generation is over
    again = app.test_client()
    assert login(again, "leaver", PASSWORD).status_code == 303 and again.get("/api/jobs").status_code == 200


@pytest.mark.parametrize("setting, trusted, base_url, headers, secure", [
    ("auto", 0, "http://localhost", {}, False),
    ("auto", 0, "https://localhost", {}, True),
    ("auto", 1, "http://localhost", {"X-Forwarded-Proto": "https"}, True),   # behind a TLS proxy
    ("auto", 0, "http://localhost", {"X-Forwarded-Proto": "https"}, False),  # the header is not trusted
    ("true", 0, "http://localhost", {}, True),
    ("false", 0, "https://localhost", {}, False),
])
def test_session_cookie_secure_flag(make_app, setting, trusted, base_url, headers, secure):
    app = make_app(session_cookie_secure=setting, trusted_proxies=trusted)
    web = app.test_client()
    reply = web.post("/signup", base_url=base_url, headers=headers,
                     data={"username": "cookie", "password": PASSWORD,
                           "csrf_token": csrf_of_at(web, base_url, headers)})
    assert reply.status_code == 303
    cookie = next(v for v in reply.headers.getlist("Set-Cookie") if v.startswith("session="))
    assert ("; Secure" in cookie) is secure, cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def csrf_of_at(web, base_url: str, headers: dict) -> str:
    import re

    page = web.get("/login", base_url=base_url, headers=headers).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_sign_ups_are_limited_per_address(make_app):
    app = make_app(signup_limit_per_address="3/hour")
    for name in ("one", "two", "three"):
        sign_up(app.test_client(), name)
    web = app.test_client()
    reply = web.post("/signup", data={"username": "four", "password": PASSWORD, "csrf_token": csrf_of(web)})
    assert reply.status_code == 429 and 1 <= int(reply.headers["Retry-After"]) <= 3600
    assert "sign-ups from your address" in reply.get_data(as_text=True)
