"""REST's JWT authentication (accounts.authentication): simplejwt's rules, with the user read
compiled once per process. The same user, the same statement, no compile after the first, and
every refusal as before. On SQLite: tests/core/test_compiled.py."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models.sql.compiler import SQLCompiler
from django.test.utils import CaptureQueriesContext
from rest_framework.settings import api_settings as drf_settings
from rest_framework.test import APIClient

from accounts.authentication import JWTAuthentication, UserById
from accounts.models import User
from tests.conftest import auth_api, jwt_for

pytestmark = pytest.mark.django_db


def test_rest_authenticates_with_it():
    assert JWTAuthentication in drf_settings.DEFAULT_AUTHENTICATION_CLASSES


def test_the_user_read_is_the_orms_statement_compiled_once(make_user, monkeypatch):
    user = make_user(tier="premium", staff=True)
    users = UserById()
    with CaptureQueriesContext(connection) as first:
        read = users.get(id=user.pk)
    with CaptureQueriesContext(connection) as orm:
        expected = User.objects.get(id=user.pk)
    assert [q["sql"] for q in first.captured_queries] == [q["sql"].removesuffix(" LIMIT 21") for q in orm]
    fields = [f.attname for f in User._meta.concrete_fields]
    assert [getattr(read, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert not read._state.adding and read._state.db == "default"  # as the ORM loads it

    compiles = []
    original = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **k: compiles.append(1) or original(self, *a, **k))
    assert users.get(id=str(user.pk)).pk == user.pk  # the claim as a string too
    assert compiles == []  # compiled once, the first time


def test_a_missing_user_a_bad_id_and_an_inactive_one_are_refused_as_simplejwt_refuses_them(make_user):
    users = UserById()
    with pytest.raises(User.DoesNotExist):
        users.get(id=10**9)
    for claim in ("not-a-number", 2**70, -(2**70), [1], {"id": 1}, None):  # no user, as the ORM matches none
        with pytest.raises(User.DoesNotExist):
            users.get(id=claim)
    gone = make_user()
    token = jwt_for(gone)
    gone.delete()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    refused = client.get("/api/orders")
    assert refused.status_code == 401 and refused.json()["code"] == "user_not_found", refused.json()
    idle = make_user()
    User.objects.filter(pk=idle.pk).update(is_active=False)
    refused = auth_api(idle).get("/api/orders")
    assert refused.status_code == 401 and refused.json()["code"] == "user_inactive", refused.json()
    assert auth_api(make_user()).get("/api/orders").status_code == 200


def test_the_schema_still_declares_the_bearer_scheme(client):
    schema = client.get("/api/schema?format=json").json()
    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
    assert {"jwtAuth": []} in schema["paths"]["/api/orders"]["get"]["security"]


def test_an_hmac_key_is_checked_once_and_a_refused_key_every_time(monkeypatch):
    """PyJWT checks the HMAC key (not PEM, SSH or DER, each tried by parsing) before every token it
    signs or verifies: once a key has passed, its check is not run again in this process."""
    import jwt
    from jwt.algorithms import HMACAlgorithm
    from jwt.exceptions import InvalidKeyError, InvalidSignatureError

    from accounts.authentication import HmacKeyCheckedOnce

    hs256 = jwt.get_algorithm_by_name("HS256")
    assert isinstance(hs256, HmacKeyCheckedOnce)  # at start-up
    monkeypatch.setattr(hs256, "_checked", {})  # this test's keys only, and the process's back after it
    checks = []
    original = HMACAlgorithm._is_der_key
    monkeypatch.setattr(HMACAlgorithm, "_is_der_key", staticmethod(lambda key: checks.append(key) or original(key)))
    key = "a key of this test only, 32 bytes and more"
    tokens = [jwt.encode({"n": n}, key, algorithm="HS256") for n in range(3)]
    assert [jwt.decode(t, key, algorithms=["HS256"])["n"] for t in tokens] == [0, 1, 2]
    assert checks == [key.encode()]

    # Another key is still another key: its own check, and a token it did not sign is refused.
    other = "another key of this test, 32 bytes and more"
    with pytest.raises(InvalidSignatureError):
        jwt.decode(tokens[0], other, algorithms=["HS256"])
    assert checks == [key.encode(), other.encode()]

    # A key that is not an HMAC secret is refused on every use, not remembered: a public key, or a
    # JWK's JSON passed as if it were the secret.
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    jwk = '{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}'
    for refused in (pem, jwk, pem.encode(), jwk.encode()):
        with pytest.raises(InvalidKeyError):
            jwt.encode({"n": 0}, refused, algorithm="HS256")
    assert set(hs256._checked) == {key.encode(), other.encode()}

    # Kept keys are bounded: they come from the settings, but a caller could pass any.
    for n in range(HmacKeyCheckedOnce.KEPT + 5):
        jwt.encode({"n": n}, f"{key} {n}", algorithm="HS256")
    assert len(hs256._checked) == HmacKeyCheckedOnce.KEPT
