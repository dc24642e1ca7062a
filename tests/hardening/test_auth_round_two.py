"""Hardening cases 34-39 (issue 19, findings 1, 8, 9) over the wire against real daphne processes:
password guessing is throttled before any hash is computed and ends; panel and admin sign-ins lock
out a username at one address and cool off; weak passwords are refused; refresh tokens are single-
use and revocable; the demo seed refuses a production database."""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

import psutil
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.models import User
from accounts.services import account_deactivate, account_upsert
from accounts.tokens import RefreshToken
from axisor_client import Login
from devtools.management.commands.seed_demo import DEMO_ACCOUNTS
from tests.integration.conftest import ROOT, subprocess_database_url
from tests.polling import until_sync, window_room

RIGHT = "correct-horse-battery-9"


def real_user(make_user, username: str, **kwargs) -> User:
    """A user whose password the server checks at full strength (the test process hashes with MD5,
    which the server does not accept), so a wrong guess costs what it costs in production."""
    user = make_user(username, **kwargs)
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(RIGHT, hasher.salt())
    user.save(update_fields=["password"])
    return user


def post_json(url: str, body: dict, *, headers: dict | None = None, source: str = "127.0.0.1"):
    """POST JSON from ``source`` (any 127.x address reaches the loopback server); (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", parts.path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, resp.headers, json.loads(raw) if raw else {}
    finally:
        conn.close()


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def token(server, username: str, password: str = RIGHT, **kwargs):
    return post_json(f"{server.http}/api/auth/token", {"username": username, "password": password}, **kwargs)


def assert_throttled(status: int, headers, body: dict, *, at_most: int) -> None:
    assert status == 429, (status, body)
    assert body["code"] == "throttled" and set(body) == {"code", "detail"}, body
    assert 1 <= int(headers["Retry-After"]) <= at_most, headers["Retry-After"]


# ---- cases 34, 35: the credential endpoints: guessing is throttled before hashing, and it ends ----


def test_token_guessing_is_throttled_per_username_before_any_hash_and_the_user_gets_back_in(daphne, make_user):
    real_user(make_user, "victim")
    real_user(make_user, "target")
    # A short window so the test sees it end; a high address rate so only the username's counts.
    server = daphne(THROTTLE_LOGIN_USERNAME="5/20s", THROTTLE_LOGIN_ADDRESS="1000/m", AXISOR_BACKGROUND="0")
    proc = psutil.Process(server.proc.pid)

    answers = []
    for guess in range(30):
        before = cpu_seconds(proc)
        status, headers, body = token(server, "victim", f"guess-{guess}")
        answers.append((status, headers, body, cpu_seconds(proc) - before))
    statuses = [a[0] for a in answers]
    assert set(statuses) == {401, 429}, statuses
    # Five checked, then refused; a window boundary inside the run may let five more be checked.
    assert 5 <= statuses.index(429) <= 10 and statuses.count(401) <= 10, statuses
    for status, headers, body, _ in answers:
        if status == 429:
            assert_throttled(status, headers, body, at_most=20)
        else:
            assert body["code"] == "no_active_account"
    # A refused guess is counted before the password is hashed: it costs the server next to nothing.
    hashed = statistics.mean(a[3] for a in answers if a[0] == 401)
    refused = statistics.mean(a[3] for a in answers if a[0] == 429)
    assert refused < hashed / 10, f"CPU per checked guess {hashed:.3f} s, per refused {refused:.4f} s"
    print(
        f"\ntoken guessing: {statuses.count(401)} × 401 then {statuses.count(429)} × 429 (first at guess"
        f" {statuses.index(429) + 1}); server CPU per checked guess {hashed * 1000:.0f} ms, per refused"
        f" {refused * 1000:.1f} ms"
    )

    # The right password does not slip through the throttle...
    window = int(time.time() // 20)
    status, headers, body = token(server, "victim")
    if int(time.time() // 20) == window:
        assert_throttled(status, headers, body, at_most=20)
    # ...and once the window has passed, the real user signs in again.
    started = time.monotonic()
    until_sync(lambda: token(server, "victim")[0] == 200, timeout=45, interval=0.5, what="victim signs in again")
    print(f"token guessing: the right user signed in again {time.monotonic() - started:.1f} s later (window 20 s)")

    # In parallel, the count holds too (every guess reads and bumps one atomic counter).
    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(lambda i: token(server, "target", f"guess-{i}")[0], range(40)))
    assert statuses.count(401) <= 10 and statuses.count(429) >= 30, statuses
    print(f"token guessing, 40 in parallel: {statuses.count(401)} × 401, {statuses.count(429)} × 429")


def test_one_address_trying_many_usernames_is_throttled_whatever_it_forwards(daphne):
    server = daphne(THROTTLE_LOGIN_ADDRESS="8/m", AXISOR_BACKGROUND="0")
    answers = [token(server, f"nobody{n}", "guess", headers={"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(20)]
    statuses = [a[0] for a in answers]
    # No proxy is trusted (TRUSTED_PROXY_COUNT=0): a forged X-Forwarded-For is not a new address.
    assert 429 in statuses and statuses.count(401) <= 16, statuses
    assert_throttled(*answers[statuses.index(429)], at_most=60)
    # Another address is not held back by this one.
    assert token(server, "nobody", "guess", source="127.0.0.2")[0] == 401


def test_order_sessions_and_refreshes_are_throttled_per_user(daphne, make_user):
    server = daphne(THROTTLE_SESSIONS_USER="3/m", THROTTLE_REFRESH_USER="3/m", AXISOR_BACKGROUND="0")
    busy, other = make_user("busy", tier="enterprise"), make_user("other", tier="enterprise")
    busy_access = str(RefreshToken.for_user(busy).access_token)

    def session(access: str):
        return post_json(f"{server.http}/api/auth/sessions", {}, headers={"Authorization": f"Bearer {access}"})

    answers = [session(busy_access) for _ in range(7)]
    statuses = [a[0] for a in answers]
    assert 429 in statuses and statuses.count(201) <= 6, statuses
    assert_throttled(*answers[statuses.index(429)], at_most=60)
    assert session(str(RefreshToken.for_user(other).access_token))[0] == 201

    refresh, statuses = str(RefreshToken.for_user(busy)), []
    for _ in range(7):
        status, headers, body = post_json(f"{server.http}/api/auth/token/refresh", {"refresh": refresh})
        statuses.append(status)
        if status == 200:
            refresh = body["refresh"]
        else:
            assert_throttled(status, headers, body, at_most=60)
    assert 429 in statuses and statuses.count(200) <= 6, statuses


# ---- case 36: panel and admin sign-ins lock out one username at one address, then cool off ---------


class Browser:
    """A form-posting client with cookies, from one source address."""

    def __init__(self, server, source: str = "127.0.0.1") -> None:
        self.port, self.source, self.cookies = server.port, source, SimpleCookie()

    def request(self, method: str, path: str, fields: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30, source_address=(self.source, 0))
        headers = {"Cookie": "; ".join(f"{k}={m.value}" for k, m in self.cookies.items())}
        body = None
        if fields is not None:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        for value in resp.headers.get_all("Set-Cookie") or []:
            self.cookies.load(value)
        return resp.status, resp.headers, text

    def sign_in(self, path: str, username: str, password: str):
        status, _, page = self.request("GET", path)
        assert status == 200, page[-500:]
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
        return self.request("POST", path, {**fields, "username": username, "password": password})


PANEL, ADMIN = "/panel/login", "/admin/login/"
GENERIC = "Wrong username or password, or not a staff account."


def signed_in(answer, where: str) -> bool:
    status, headers, _ = answer
    return status == 302 and headers["Location"] == where


def test_panel_and_admin_sign_ins_lock_out_then_cool_off_and_never_lock_out_other_addresses(daphne, make_user):
    real_user(make_user, "ops", staff=True)
    real_user(make_user, "root", superuser=True)
    real_user(make_user, "customer")
    server = daphne(AXES_FAILURE_LIMIT="3", AXES_COOLOFF_SECONDS="3", AXISOR_BACKGROUND="0")
    attacker = Browser(server)

    # Panel: two failures answer the form again; the third locks the pair out.
    for _ in range(2):
        status, _, page = attacker.sign_in(PANEL, "ops", "guess")
        assert status == 200 and GENERIC in page
    status, headers, page = attacker.sign_in(PANEL, "ops", "guess")
    locked_at = time.monotonic()
    assert status == 429 and headers["Retry-After"] == "3" and "Too many sign-in attempts" in page
    # Locked out: the right password is refused before it is checked, on the admin too (same pair).
    assert attacker.sign_in(PANEL, "ops", RIGHT)[0] == 429
    assert attacker.sign_in(ADMIN, "ops", RIGHT)[0] == 429
    # The real user at another address is not locked out.
    assert signed_in(Browser(server, source="127.0.0.2").sign_in(PANEL, "ops", RIGHT), "/panel/")
    # The cool-off ends the lockout (attempts during it did not extend it).
    until_sync(
        lambda: signed_in(Browser(server).sign_in(PANEL, "ops", RIGHT), "/panel/"),
        timeout=20,
        interval=0.5,
        what="ops signs in again after the cool-off",
    )
    print(f"\npanel lockout: ops signed in again {time.monotonic() - locked_at:.1f} s after it (cool-off 3 s)")

    # Admin: the same.
    for _ in range(2):
        assert attacker.sign_in(ADMIN, "root", "guess")[0] == 200
    assert attacker.sign_in(ADMIN, "root", "guess")[0] == 429
    assert attacker.sign_in(ADMIN, "root", RIGHT)[0] == 429
    assert signed_in(Browser(server, source="127.0.0.2").sign_in(ADMIN, "root", RIGHT), "/admin/")
    until_sync(
        lambda: signed_in(Browser(server).sign_in(ADMIN, "root", RIGHT), "/admin/"),
        timeout=20,
        interval=0.5,
        what="root signs in to the admin again after the cool-off",
    )

    # A non-staff user with the right password reads what a wrong password reads, and it counts as
    # a failure: neither the message nor the lockout tells that the password was right.
    right, wrong = attacker.sign_in(PANEL, "customer", RIGHT), attacker.sign_in(PANEL, "customer", "guess")
    assert right[0] == wrong[0] == 200
    assert GENERIC in right[2] and GENERIC in wrong[2]
    assert attacker.sign_in(PANEL, "customer", RIGHT)[0] == 429


def test_one_address_trying_many_usernames_on_the_sign_in_forms_is_throttled(daphne):
    server = daphne(THROTTLE_LOGIN_ADDRESS="6/m", AXISOR_BACKGROUND="0")
    attacker = Browser(server)
    time.sleep(window_room())  # the ten attempts inside one minute window of the rate (a clock wait)
    answers = [attacker.sign_in(PANEL if n % 2 else ADMIN, f"nobody{n}", "guess") for n in range(10)]
    statuses = [a[0] for a in answers]
    # axes counts per username and address, so each new username starts afresh there; the address
    # rate (shared with POST /api/auth/token) stops the seventh, before its password is hashed.
    assert statuses[:6] == [200] * 6 and statuses[6:] == [429] * 4, statuses
    assert 1 <= int(answers[6][1]["Retry-After"]) <= 60 and "Too many sign-in attempts" in answers[6][2]
    assert Browser(server, source="127.0.0.2").sign_in(PANEL, "nobody", "guess")[0] == 200  # another address
    print(f"\nsign-in forms, one address, 10 usernames: {statuses.count(200)} checked, {statuses.count(429)} × 429")


# ---- case 37: weak passwords are refused wherever a password is set --------------------------------


@pytest.mark.django_db
def test_weak_passwords_are_refused_by_the_command_and_the_admin(make_user):
    for weak in ("password", "12345678", "aaaaaaaa", "1234567890123", "qwertyuiop", "eve-the-user"):
        with pytest.raises(CommandError):
            call_command("create_account", "eve-the-user", "--password", weak)
        with pytest.raises(ValidationError):
            account_upsert(username="eve-the-user", password=weak, tier="basic")
    assert not User.objects.filter(username="eve-the-user").exists()
    for username, password, *_ in DEMO_ACCOUNTS:  # the README's demo passwords still pass
        validate_password(password, User(username=username))

    client = Client()
    client.force_login(make_user("root", superuser=True))
    page = client.post(
        "/admin/accounts/user/add/",
        {
            "username": "weakling",
            "tier": "basic",
            "usable_password": "true",
            "password1": "12345678",
            "password2": "12345678",
        },
    )
    assert page.status_code == 200 and b"This password is too common." in page.content
    assert not User.objects.filter(username="weakling").exists()


# ---- case 38: refresh tokens are single-use, and logout, a new password or deactivation revoke them --


def refresh(server, token: str):
    return post_json(f"{server.http}/api/auth/token/refresh", {"refresh": token})


def test_refresh_tokens_rotate_and_are_revoked_by_logout_password_change_and_deactivation(daphne, make_user):
    real_user(make_user, "trader")
    server = daphne(AXISOR_BACKGROUND="0")
    status, _, pair = token(server, "trader")
    assert status == 200 and set(pair) == {"access", "refresh"}

    # Rotation: each refresh answers a new pair and spends the token it was given.
    status, _, rotated = refresh(server, pair["refresh"])
    assert status == 200 and set(rotated) == {"access", "refresh"} and rotated["refresh"] != pair["refresh"]
    status, _, body = refresh(server, pair["refresh"])
    assert status == 401 and body["code"] == "token_not_valid", body
    # Two refreshes racing with one token: one wins.
    with ThreadPoolExecutor(8) as pool:
        raced = list(pool.map(lambda _: refresh(server, rotated["refresh"]), range(8)))
    winners = [body for status, _, body in raced if status == 200]
    assert len(winners) == 1 and all(status == 401 for status, _, _ in raced if status != 200), raced

    # Logout revokes the refresh token; a second logout and a refresh after it are 401.
    current = winners[0]["refresh"]
    status, _, body = post_json(f"{server.http}/api/auth/logout", {"refresh": current})
    assert status == 204, body
    status, _, body = refresh(server, current)
    assert status == 401 and body == {"code": "token_not_valid", "detail": body["detail"]}, body
    assert post_json(f"{server.http}/api/auth/logout", {"refresh": current})[0] == 401
    status, _, body = post_json(f"{server.http}/api/auth/logout", {"refresh": "not-a-token"})
    assert status == 401 and body["code"] == "token_not_valid"

    # A password change through the service blacklists every outstanding refresh token...
    user = User.objects.get(username="trader")
    before = [str(RefreshToken.for_user(user)) for _ in range(2)]
    account_upsert(username="trader", password="another-horse-battery-7", tier="basic")
    for old in before:
        status, _, body = refresh(server, old)
        assert status == 401 and body["code"] == "token_not_valid", body
    # ...and so does one made any other way (a shell, manage.py changepassword): User.save revokes
    # them too (before, only the token's password claim caught this one, "password_changed").
    user.refresh_from_db()
    old = str(RefreshToken.for_user(user))
    user.set_password("third-horse-battery-5")
    user.save()
    status, _, body = refresh(server, old)
    assert status == 401 and body == {"code": "token_not_valid", "detail": "Token is blacklisted"}, body

    # Deactivation revokes them for good: re-activating the account does not bring them back.
    user.refresh_from_db()
    old = str(RefreshToken.for_user(user))
    account_deactivate(user=user)
    status, _, body = refresh(server, old)
    assert status == 401 and body["code"] in {"no_active_account", "token_not_valid"}, body
    account_upsert(username="trader", password=None, tier="basic")
    status, _, body = refresh(server, old)
    assert status == 401 and body["code"] == "token_not_valid", body
    # The Python SDK keeps the successor of each refresh token it spends (it does not fall back to
    # the password, which would leave the first successor outstanding).
    user.refresh_from_db()
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(RIGHT, hasher.salt())
    user.save(update_fields=["password"])
    login = Login(server.http, "trader", RIGHT)
    for _ in range(3):
        login.jwt()
        login.invalidate()  # forget the access token: the next call refreshes
    assert OutstandingToken.objects.filter(user=user, blacklistedtoken__isnull=True).count() == 1

    # A deleted user's token is refused, not a server error.
    gone = make_user("gone", balance=0)
    orphan = str(RefreshToken.for_user(gone))
    gone.delete()
    status, _, body = refresh(server, orphan)
    assert status == 401 and body["code"] == "no_active_account", body


# ---- case 39: the demo seed refuses a production database ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_seed_demo_refuses_to_run_in_production():
    env = {
        **os.environ,
        "AXISOR_ENV": "production",
        "SECRET_KEY": "s" * 50,
        "ALLOWED_HOSTS": "example.com",
        "DATABASE_URL": subprocess_database_url(),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "seed_demo refuses to run with AXISOR_ENV=production" in done.stderr
    assert not User.objects.exists()
