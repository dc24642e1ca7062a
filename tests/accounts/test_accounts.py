"""Accounts, the create_account command, JWT endpoints and the admin's tier column."""

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_create_account_creates_then_updates(capsys):
    call_command("create_account", "dana", "--password", "first-pass-1", "--tier", "premium")
    user = User.objects.get(username="dana")
    assert user.tier == "premium" and not user.is_staff and user.check_password("first-pass-1")
    call_command("create_account", "dana", "--password", "second-pass-2", "--tier", "enterprise", "--staff")
    user.refresh_from_db()
    assert user.tier == "enterprise" and user.is_staff and user.check_password("second-pass-2")
    assert "created dana" in capsys.readouterr().out


def test_create_account_refuses_bad_input():
    with pytest.raises(CommandError):
        call_command("create_account", "eve", "--password", "pw", "--tier", "basic")  # too short
    with pytest.raises(CommandError):
        call_command("create_account", "eve", "--password", "long-enough-1", "--tier", "gold")
    assert not User.objects.filter(username="eve").exists()


def test_token_pair_refresh_and_inactive_user(api, make_user):
    make_user("frank", password="frank-pass-1")
    resp = api.post("/api/auth/token", {"username": "frank", "password": "frank-pass-1"}, format="json")
    assert resp.status_code == 200 and set(resp.json()) == {"access", "refresh"}
    pair = resp.json()
    resp = api.post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json")
    assert resp.status_code == 200 and "access" in resp.json()

    bad = api.post("/api/auth/token", {"username": "frank", "password": "nope"}, format="json")
    assert bad.status_code == 401 and bad.json()["code"] == "no_active_account"

    User.objects.filter(username="frank").update(is_active=False)
    assert (
        api.post("/api/auth/token", {"username": "frank", "password": "frank-pass-1"}, format="json").status_code == 401
    )
    assert api.post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    resp = api.get("/api/system/notices")
    assert resp.status_code == 401 and resp.json()["code"] == "user_inactive"


def test_admin_lists_and_edits_tiers(make_user):
    root = make_user("root", superuser=True)
    target = make_user("gina", tier="basic")
    client = Client()
    client.force_login(root)
    listing = client.get("/admin/accounts/user/?tier__exact=basic")
    assert listing.status_code == 200 and b"gina" in listing.content
    page = client.get(f"/admin/accounts/user/{target.pk}/change/")
    assert b'name="tier"' in page.content


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "channelLayer": "ok"}


def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema")
    assert schema.status_code == 200 and b"/api/system/notices" in schema.content
    assert client.get("/api/docs").status_code == 200


def test_the_same_password_again_keeps_the_users_tokens_and_a_new_one_revokes_them(db):
    """scripts/run upserts the demo accounts on every start: a page's token must survive that."""
    from rest_framework_simplejwt.exceptions import AuthenticationFailed
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
    from rest_framework_simplejwt.tokens import RefreshToken

    from accounts.authentication import JWTAuthentication  # REST's: simplejwt's rules
    from accounts.services import account_upsert

    user, _ = account_upsert(username="keeper", password="keeper-pass-12", tier="basic")
    refresh = RefreshToken.for_user(user)
    access = JWTAuthentication().get_validated_token(str(refresh.access_token))

    again, created = account_upsert(username="keeper", password="keeper-pass-12", tier="premium")
    assert not created and again.tier == "premium"
    assert JWTAuthentication().get_user(access).pk == user.pk
    assert not BlacklistedToken.objects.filter(token__jti=refresh["jti"]).exists()

    account_upsert(username="keeper", password="keeper-pass-34", tier="premium")
    with pytest.raises(AuthenticationFailed):
        JWTAuthentication().get_user(access)
    assert BlacklistedToken.objects.filter(token__jti=refresh["jti"]).exists()
