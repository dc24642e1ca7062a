"""A token's credentials claim: a sign-in whose password check re-hashes the password (the hasher's
parameters changed since it was stored) keeps the user's other sessions; a real password change
ends them all, the REST API's, the refresh endpoint's and the sockets' alike."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from rest_framework.test import APIClient

from accounts.models import User
from tests.conftest import closed_with, ws

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "device-pass-1234"


class OldIterations(PBKDF2PasswordHasher):
    """PBKDF2 as it was configured before a deploy (cheap here: the test hashes several times)."""

    iterations = 1_000


class NewIterations(PBKDF2PasswordHasher):
    """... and after it: a stored hash of the old count is re-hashed at the next sign-in."""

    iterations = 2_000


HASHERS = f"{__name__}.%s"


def sign_in(username: str) -> dict:
    answer = APIClient().post("/api/auth/token", {"username": username, "password": PASSWORD}, format="json")
    assert answer.status_code == 200, answer.json()
    return answer.json()


def account(access: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/account").status_code


def refreshed(refresh: str):
    return APIClient().post("/api/auth/token/refresh", {"refresh": refresh}, format="json")


async def socket_code(access: str) -> int | None:
    """None: /ws answered ``connection``; otherwise the code it closed with."""
    comm = ws(token=access)
    ok, _ = await comm.connect()
    assert ok
    try:
        first = await comm.receive_output(timeout=5)
        if first["type"] == "websocket.send" and '"connection"' in first.get("text", ""):
            return None
        return await closed_with(comm)
    finally:
        await comm.disconnect()


async def test_a_rehash_at_sign_in_keeps_the_other_devices_tokens_and_a_new_password_ends_them(settings):
    from asgiref.sync import sync_to_async

    settings.PASSWORD_HASHERS = [HASHERS % "OldIterations"]
    user = await sync_to_async(User.objects.create_user)("two-devices", password=PASSWORD)
    laptop = await sync_to_async(sign_in)("two-devices")

    settings.PASSWORD_HASHERS = [HASHERS % "NewIterations"]  # a deploy raised the iterations
    before = (await User.objects.aget(pk=user.pk)).password
    phone = await sync_to_async(sign_in)("two-devices")  # this sign-in re-hashes the password
    after = (await User.objects.aget(pk=user.pk)).password
    assert before.startswith("pbkdf2_sha256$1000$") and after.startswith("pbkdf2_sha256$2000$")

    # the laptop's session goes on: its access token, its socket, its refresh token
    assert await sync_to_async(account)(laptop["access"]) == 200
    assert await socket_code(laptop["access"]) is None
    renewed = await sync_to_async(refreshed)(laptop["refresh"])
    assert renewed.status_code == 200, renewed.json()
    laptop = renewed.json()
    assert await sync_to_async(account)(phone["access"]) == 200

    # a real password change ends both devices' sessions
    changed = await User.objects.aget(pk=user.pk)
    changed.set_password("brand-new-pass-5678")
    await sync_to_async(changed.save)()
    for device in (laptop, phone):
        assert await sync_to_async(account)(device["access"]) == 401
        assert await socket_code(device["access"]) == 4001
        refused = await sync_to_async(refreshed)(device["refresh"])
        assert refused.status_code == 401, refused.json()


async def test_a_token_without_the_credentials_claim_is_refused(make_user):
    """A token minted before the credentials claim existed (its claim was the password's hash) is
    refused once: its user signs in again."""
    from asgiref.sync import sync_to_async
    from rest_framework_simplejwt.tokens import AccessToken as PlainAccessToken

    user = await sync_to_async(make_user)("pre-deploy")
    plain = PlainAccessToken()
    plain["user_id"] = str(user.pk)
    assert await sync_to_async(account)(str(plain)) == 401
    assert await socket_code(str(plain)) == 4001


def test_a_stale_copy_of_the_user_saved_after_a_password_change_does_not_revive_its_tokens(make_user):
    """A copy read before the change (an admin form, a script) and saved after it writes every
    column: not the older credentials counter, which would make the ended tokens good again."""
    from accounts.tokens import AccessToken
    from tests.conftest import auth_api

    user = make_user("stale")
    old_token = str(AccessToken.for_user(user))
    stale = User.objects.get(pk=user.pk)
    changed = User.objects.get(pk=user.pk)
    changed.set_password("another-pass-9012")
    changed.save()
    stale.tier = "premium"
    stale.save()
    assert User.objects.get(pk=user.pk).credentials_version == changed.credentials_version == 1
    refused = APIClient()
    refused.credentials(HTTP_AUTHORIZATION=f"Bearer {old_token}")
    assert refused.get("/api/account").status_code == 401
    assert auth_api(changed).get("/api/account").status_code == 200
