"""Hardening cases 5, 7, 8, 9 over the wire against real daphne processes: forged and misused JWTs
are refused on both sockets and REST; foreign browser origins are refused; other users' rooms and
objects stay out of reach; credentials never reach logs, error messages or the admin."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import jwt as pyjwt
import pytest
import websockets
from channels.db import database_sync_to_async
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from websockets.exceptions import InvalidStatus

from accounts.tokens import AccessToken
from tests.conftest import jwt_for
from tests.hardening.conftest import close_code, open_ws, recv_json, recv_until, rest

# ---- case 5: JWT attacks -------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(user, **changes) -> dict:
    """The claims of a genuine access token (with simplejwt's password-hash claim), changed:
    a value of None removes the claim."""
    payload = dict(AccessToken.for_user(user).payload)
    payload["jti"] = f"jti{time.monotonic_ns()}"
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


def hs256_with(secret: bytes, payload: dict) -> str:
    """HS256 with any secret (PyJWT itself refuses a PEM key as an HMAC secret)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def forged_tokens(user) -> dict[str, str]:
    key = settings.SIMPLE_JWT["SIGNING_KEY"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_pem = attacker.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = attacker.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    good = claims(user)
    now = int(time.time())
    return {
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, good),
        "alg None, real signature kept": jwt_for(user)
        .rsplit(".", 1)[0]
        .replace(jwt_for(user).split(".")[0], b64(json.dumps({"alg": "None", "typ": "JWT"}).encode()))
        + ".",
        "RS256 with the attacker's key": pyjwt.encode(good, attacker_pem, algorithm="RS256"),
        "HS256 keyed with a public key": hs256_with(public_pem, good),
        "embedded jwk": pyjwt.encode(good, attacker_pem, algorithm="RS256", headers={"jwk": jwk}),
        "jku header": pyjwt.encode(
            good, attacker_pem, algorithm="RS256", headers={"jku": "http://127.0.0.1:9/keys.json", "kid": "k1"}
        ),
        "x5u header": pyjwt.encode(good, attacker_pem, algorithm="RS256", headers={"x5u": "http://127.0.0.1:9/c.pem"}),
        "unknown crit, real key": pyjwt.encode(good, key, algorithm="HS256", headers={"crit": ["exp-ext"]}),
        "HS512 with the real key": pyjwt.encode(good, key, algorithm="HS512"),
        "expired": pyjwt.encode(claims(user, exp=now - 5, iat=now - 600), key, algorithm="HS256"),
        "not yet valid": pyjwt.encode(claims(user, nbf=now + 3600), key, algorithm="HS256"),
        "refresh token as access": pyjwt.encode(claims(user, token_type="refresh"), key, algorithm="HS256"),
        "no token type": pyjwt.encode(claims(user, token_type=None), key, algorithm="HS256"),
        "other signature": jwt_for(user)[:-4] + ("AAAA" if not jwt_for(user).endswith("AAAA") else "BBBB"),
        "garbage": "not.a.jwt",
        "huge": "a" * 5000,
    }


async def refused_everywhere(server, token: str) -> list[str]:
    """The ways ``token`` got in (empty: refused on every door)."""
    leaks = []
    status, body = await rest("GET", f"{server.http}/api/orders", token=token)
    if status != 401:
        leaks.append(f"REST {status}")
    elif token in json.dumps(body):
        leaks.append("REST error echoes the token")
    try:
        async with websockets.connect(f"{server.ws}/ws", additional_headers={"Authorization": f"Bearer {token}"}) as s:
            first = await recv_json(s)
            if first.get("type") != "error" or first.get("code") != "AUTHENTICATION_FAILED":
                leaks.append(f"/ws header: {first}")
            elif token in json.dumps(first):
                leaks.append("/ws error echoes the token")
            if await close_code(s) != 4001:
                leaks.append(f"/ws header closed {s.close_code}")
    except InvalidStatus as exc:
        leaks.append(f"/ws header handshake {exc.response.status_code}")
    async with websockets.connect(f"{server.ws}/ws") as s:
        await s.send(json.dumps({"type": "auth", "token": token}))
        first = await recv_json(s)
        if first.get("code") != "AUTHENTICATION_FAILED":
            leaks.append(f"/ws auth message: {first}")
        if await close_code(s) != 4001:
            leaks.append(f"/ws auth message closed {s.close_code}")
    return leaks


async def test_forged_and_misused_jwts_are_refused_on_rest_and_socket(daphne, make_user):
    server = await asyncio.to_thread(daphne, AXISOR_SIMULATE="")
    user = await database_sync_to_async(make_user)("victim")
    # The genuine token works, so every refusal below is about the token, not the door.
    status, _ = await rest("GET", f"{server.http}/api/orders", token=jwt_for(user))
    assert status == 200
    sock, _ = await open_ws(server, jwt_for(user))
    await sock.close()

    tokens = forged_tokens(user)
    results = {name: await refused_everywhere(server, token) for name, token in tokens.items()}
    print(f"\ncase 5: {len(tokens)} forged/misused tokens × 3 doors (REST, /ws header, /ws auth message)")
    assert {name: leaks for name, leaks in results.items() if leaks} == {}


async def test_audience_and_issuer_are_enforced_when_configured(daphne, make_user):
    server = await asyncio.to_thread(daphne, JWT_AUDIENCE="axisor-ws", JWT_ISSUER="https://auth.axisor.test")
    user = await database_sync_to_async(make_user)("aud")
    key = settings.SIMPLE_JWT["SIGNING_KEY"]
    right = {"aud": "axisor-ws", "iss": "https://auth.axisor.test"}
    good = pyjwt.encode(claims(user, **right), key, algorithm="HS256")
    status, body = await rest("GET", f"{server.http}/api/orders", token=good)
    assert status == 200, body
    sock, _ = await open_ws(server, good)
    await sock.close()
    wrong = {
        "no audience": {**right, "aud": None},
        "wrong audience": {**right, "aud": "someone-else"},
        "no issuer": {**right, "iss": None},
        "wrong issuer": {**right, "iss": "https://evil.test"},
    }
    results = {}
    for name, extra in wrong.items():
        token = pyjwt.encode(claims(user, **extra), key, algorithm="HS256")
        results[name] = await refused_everywhere(server, token)
    assert {name: leaks for name, leaks in results.items() if leaks} == {}


# ---- case 7: cross-site WebSocket hijacking (Origin) -------------------------------------------


async def test_foreign_origin_is_refused_own_origin_and_no_origin_are_allowed(daphne, make_user):
    server = await asyncio.to_thread(daphne)
    user = await database_sync_to_async(make_user)("origin")
    token = jwt_for(user)
    headers = {"Authorization": f"Bearer {token}"}
    for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example", "http://localhost.evil.example"):
        for path in ("/ws", "/ws/orders"):
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(f"{server.ws}{path}", additional_headers=headers, origin=origin):
                    pass
            assert refused.value.response.status_code == 403, (origin, path)
    for origin in (f"http://127.0.0.1:{server.port}", "http://localhost:8000", None):
        sock, hello = await open_ws(server, token, origin=origin)
        assert hello["userId"] == str(user.pk)
        await sock.close()


# ---- case 8: other users' rooms and objects ------------------------------------------------------

CRAFTED_ROOMS = [
    "user:{other}",
    "user:{other}/../{me}",
    "user:{me}/../{other}",
    "user:{me}:{other}",
    "user:0{other}",
    "user: {other}",
    "user:{other} ",
    "user:+{other}",
    "user:{other}\n",
    "user:{other_fullwidth}",
    "USER:{other}",
    "user:*",
    "user:",
    "admin:staff",
    "admin:superuser",
    "admin:Staff",
    "admin:staff/../superuser",
    "admin:*",
    "admin",
    "аdmin:staff",  # Cyrillic а
    "market:BTC_USD\u200b",
    "market:ＢTC_USD",
    "market:../user.{other}",
    "market:" + "A" * 200,
    "x" * 200,
    "user." + "{other}",
    "system.evil",
    "",
]


async def test_other_users_rooms_admin_rooms_and_crafted_names_are_refused(daphne, make_user, instruments):
    lifted = {"WS_RATE_PER_SECOND": "1000", "WS_RATE_BURST": "1000", "CAP_WS_MESSAGES_PER_SECOND_BASIC": "0"}
    server = await asyncio.to_thread(daphne, AXISOR_SIMULATE="", **lifted)
    me = await database_sync_to_async(make_user)("mallory")
    other = await database_sync_to_async(make_user)("alice8")
    sock, _ = await open_ws(server, jwt_for(me))
    victim, _ = await open_ws(server, jwt_for(other))
    await sock.send(json.dumps({"type": "list_rooms"}))
    before = (await recv_until(sock, lambda m: m["type"] == "room_list"))["subscribedRooms"]

    fullwidth = "".join(chr(0xFF10 + int(d)) for d in str(other.pk))
    names = [r.format(other=other.pk, me=me.pk, other_fullwidth=fullwidth) for r in CRAFTED_ROOMS]
    names += [123, None, ["user:1"], {"a": 1}]
    for name in names:
        for command in ("subscribe", "unsubscribe"):
            await sock.send(json.dumps({"type": command, "channel": name}))
            reply = await recv_json(sock)
            if command == "unsubscribe" and reply["type"] == "room_subscription":
                continue  # leaving a room you are not in is harmless; it must not add one
            assert reply["type"] == "error" and reply["code"] in ("INVALID_ROOM", "FORBIDDEN"), (name, reply)

    await sock.send(json.dumps({"type": "list_rooms"}))
    after = (await recv_until(sock, lambda m: m["type"] == "room_list"))["subscribedRooms"]
    assert after == before

    # Nothing of the other user's reaches us: their order update arrives on their socket, and by
    # the time our own pong comes back, we have received none of it.
    body = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 625.5}
    status, _ = await rest("POST", f"{server.http}/api/orders", body, token=jwt_for(other))
    assert status == 201
    await recv_until(victim, lambda m: m.get("channel") == "orders")
    await sock.send(json.dumps({"type": "ping"}))
    leaked = []
    while (msg := await recv_json(sock))["type"] != "pong":
        leaked.append(msg)
    assert leaked == []
    await sock.close()
    await victim.close()


async def test_rest_objects_of_another_user_are_not_found(daphne, make_user, instruments):
    server = await asyncio.to_thread(daphne, AXISOR_SIMULATE="")
    me = await database_sync_to_async(make_user)("mallory2")
    other = await database_sync_to_async(make_user)("alice9")
    mine, theirs = jwt_for(me), jwt_for(other)
    body = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 625.5}
    status, order = await rest("POST", f"{server.http}/api/orders", body, token=theirs)
    assert status == 201
    oid = order["orderId"]
    status, alert = await rest(
        "POST",
        f"{server.http}/api/price-alerts",
        {"symbol": "BTC_USD", "condition": "above", "price": "1"},
        token=theirs,
    )
    assert status == 201, alert
    status, session = await rest("POST", f"{server.http}/api/auth/sessions", token=theirs)
    assert status == 201
    await rest(
        "POST",
        f"{server.http}/api/notifications",
        {"userId": other.pk, "title": "t", "message": "m", "type": "info", "category": "system"},
        token=jwt_for(await database_sync_to_async(make_user)("staff9", superuser=True)),
    )
    status, inbox = await rest("GET", f"{server.http}/api/notifications", token=theirs)
    nid = inbox["results"][0]["id"] if isinstance(inbox, dict) and inbox.get("results") else None

    attempts = [
        ("GET", f"/api/orders/{oid}", None),
        ("PATCH", f"/api/orders/{oid}", {"quantity": 2}),
        ("POST", f"/api/orders/{oid}/cancel", None),
        ("GET", f"/api/orders/{oid}/updates", None),
        ("GET", f"/api/price-alerts/{alert['id']}", None),
        ("PATCH", f"/api/price-alerts/{alert['id']}", {"price": "2"}),
        ("DELETE", f"/api/price-alerts/{alert['id']}", None),
        ("DELETE", f"/api/auth/sessions/{session['session']}", None),
    ]
    if nid is not None:
        attempts.append(("POST", f"/api/notifications/{nid}/read", None))
    for method, path, payload in attempts:
        status, answer = await rest(method, f"{server.http}{path}", payload, token=mine)
        assert status == 404, (method, path, status, answer)
    for path in ("/api/orders", "/api/trades", "/api/price-alerts", "/api/events?since=0"):
        status, answer = await rest("GET", f"{server.http}{path}", token=mine)
        assert status == 200 and oid not in json.dumps(answer), (path, answer)
    # Internal endpoints are staff-only.
    for path, payload in (
        ("/api/internal/executions", {"orderId": oid, "execId": "x", "type": "cancel"}),
        ("/api/internal/ticks", [{"symbol": "BTC_USD", "price": "1", "volume": "1"}]),
        ("/api/system/notices", {"kind": "maintenance", "message": "x"}),
    ):
        status, _ = await rest("POST", f"{server.http}{path}", payload, token=mine)
        assert status == 403, (path, status)
    # And it all still belongs to the other user, unchanged.
    status, still = await rest("GET", f"{server.http}/api/orders/{oid}", token=theirs)
    assert status == 200 and still["orderStatus"] == order["orderStatus"] and still["quantity"] == 1
    status, _ = await rest("GET", f"{server.http}/api/price-alerts/{alert['id']}", token=theirs)
    assert status == 200


# ---- case 9: secrets never in logs, errors or the admin -----------------------------------------


def plain_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


async def test_tokens_and_session_secrets_never_reach_logs_errors_or_the_admin(daphne, make_user, tmp_path):
    access_log = tmp_path / "access.log"
    server = await asyncio.to_thread(daphne, "--access-log", str(access_log), AXISOR_SIMULATE="", LOG_LEVEL="DEBUG")
    admin = await database_sync_to_async(make_user)("root9", superuser=True)
    user = await database_sync_to_async(make_user)("secretive")
    token = jwt_for(user)
    status, creds = await rest("POST", f"{server.http}/api/auth/sessions", token=token)
    assert status == 201
    secrets = [token, creds["token"], "pw-secret-123"]

    # Every way a credential travels: headers, query strings (sockets, and a plain GET of a socket
    # URL, as a proxy that drops the Upgrade header would send), login bodies, bad variants.
    await rest("POST", f"{server.http}/api/auth/token", {"username": "secretive", "password": "pw-secret-123"})
    await rest("POST", f"{server.http}/api/auth/token", {"username": "secretive", "password": "pw-secret-123x"})
    await rest("GET", f"{server.http}/api/orders", token=token + "x")
    await rest("GET", f"{server.http}/api/orders?token={token}&access={token}")
    await asyncio.to_thread(plain_get, f"{server.http}/ws/orders?session={creds['session']}&token={creds['token']}")
    async with websockets.connect(f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}") as s:
        await s.send("hello")
        assert token not in await s.recv()
    with pytest.raises(InvalidStatus):
        async with websockets.connect(f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}x"):
            pass
    async with websockets.connect(f"{server.ws}/ws?token={token}") as s:  # not a supported way: refused
        await s.send(json.dumps({"type": "auth", "token": token + "x"}))
        err = await recv_json(s)
        assert token not in json.dumps(err)
    sock, _ = await open_ws(server, token)
    await sock.close()

    # The admin shows sessions and users without their secrets.
    def admin_pages() -> str:
        from django.test import Client

        from orders.models import OrderSession

        client = Client()
        client.force_login(admin)
        pages = []
        row = OrderSession.objects.get(session=creds["session"])
        for url in (
            "/admin/orders/ordersession/",
            f"/admin/orders/ordersession/{row.pk}/change/",
            "/admin/accounts/user/",
            f"/admin/accounts/user/{user.pk}/change/",
        ):
            response = client.get(url)
            assert response.status_code == 200, url
            pages.append(response.content.decode())
        return "\n".join(pages)

    pages = await database_sync_to_async(admin_pages)()
    await asyncio.to_thread(server.stop)
    logs = "".join(server.lines) + access_log.read_text()
    assert "WSCONNECT" in access_log.read_text() and "/api/orders" in access_log.read_text()
    for secret in secrets:
        assert secret not in logs, f"a credential is in the logs:\n{logs[-3000:]}"
        assert secret not in pages
    assert creds["session"] in pages  # the session id is shown; its token is not
