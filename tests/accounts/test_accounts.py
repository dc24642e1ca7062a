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


def test_a_password_set_any_way_ends_the_credentials_and_a_rehash_at_sign_in_does_not(db, settings):
    """An outside test: ``manage.py changepassword`` (``set_password`` then ``save``) left the refresh
    tokens and the order-socket sessions alive, where ``create_account --password`` and the admin
    ended them. A new password now ends them however it is saved (User.save). Django's upgrade of a
    hash at a sign-in sets the same password again: it ends nothing."""
    from django.contrib.auth.hashers import MD5PasswordHasher
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

    from accounts.signals import account_password_changed
    from accounts.tokens import RefreshToken
    from orders.models import OrderSession
    from orders.services import order_session_create

    told = []
    account_password_changed.connect(lambda sender, user, **kw: told.append(user.pk), weak=False, dispatch_uid="t")
    try:
        # the test settings hash with MD5 alone: with PBKDF2 first, a sign-in upgrades the hash
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
        settings.PASSWORD_HASHERS = list(dict.fromkeys(settings.PASSWORD_HASHERS))
        user = User.objects.create_user("changer", password="first-pass-12")  # a new account: no
        user.password = MD5PasswordHasher().encode("first-pass-12", "salt")
        user.save(update_fields=["password"])
        refresh = RefreshToken.for_user(user)
        session, _ = order_session_create(user=user)
        assert User.objects.get(pk=user.pk).check_password("first-pass-12")  # re-hashed with PBKDF2 ...
        assert User.objects.get(pk=user.pk).password.startswith("pbkdf2_sha256$")
        assert told == []  # ... and nothing ended
        assert not BlacklistedToken.objects.filter(token__jti=refresh["jti"]).exists()

        changed = User.objects.get(pk=user.pk)  # what manage.py changepassword does
        changed.set_password("second-pass-34")
        changed.save()
        assert told == [user.pk]
        assert BlacklistedToken.objects.filter(token__jti=refresh["jti"]).exists()
        assert OrderSession.objects.get(pk=session.pk).revoked_at is not None
        changed.save()  # saved again, no new password: nothing more
        assert told == [user.pk]
    finally:
        account_password_changed.disconnect(dispatch_uid="t")


def test_the_same_password_again_keeps_the_users_tokens_and_a_new_one_revokes_them(db):
    """scripts/run upserts the demo accounts on every start: a page's token must survive that."""
    from rest_framework_simplejwt.exceptions import AuthenticationFailed
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

    from accounts.authentication import JWTAuthentication  # REST's: simplejwt's rules
    from accounts.services import account_upsert
    from accounts.tokens import RefreshToken

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
