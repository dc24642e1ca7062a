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


def test_the_admins_lock_out_and_a_plain_deactivation_end_the_tokens(make_user):
    """The admin's "password-based authentication: disabled" sets an unusable password without
    ``set_password``, and a shell's ``user.is_active = False; user.save()`` goes round the
    service: both end the credentials (an outside review: the refresh token kept minting access
    tokens after the lock-out, and a re-activated account's old tokens came back)."""
    from django.contrib.auth.forms import AdminPasswordChangeForm

    locked, deactivated = make_user("locked-out"), make_user("shell-deactivated")
    for user in (locked, deactivated):
        user.set_password(PASSWORD)
        user.save()
    pairs = {user.pk: sign_in(user.username) for user in (locked, deactivated)}

    form = AdminPasswordChangeForm(User.objects.get(pk=locked.pk), data={"usable_password": "false"})
    assert form.is_valid(), form.errors
    form.save()
    shell = User.objects.get(pk=deactivated.pk)
    shell.is_active = False
    shell.save()
    shell.is_active = True  # and back: its old tokens stay ended
    shell.save()

    for user in (locked, deactivated):
        assert User.objects.get(pk=user.pk).credentials_version == 2  # set_password above, then this
        assert account(pairs[user.pk]["access"]) == 401
        assert refreshed(pairs[user.pk]["refresh"]).status_code == 401
    assert not User.objects.get(pk=locked.pk).has_usable_password()
    assert account(sign_in(deactivated.username)["access"]) == 200  # a new sign-in is a new session


def test_a_rehash_at_sign_in_does_not_write_the_old_password_back_over_a_new_one(settings):
    """A thief signs in with the stolen password while staff change it: the sign-in read the old
    hash, checked it, and Django re-hashed it (the iterations had changed) with a save of the
    password alone, after the change. The new password stays; before, the old one worked again."""
    settings.PASSWORD_HASHERS = [HASHERS % "OldIterations"]
    User.objects.create_user("stolen", password=PASSWORD)
    settings.PASSWORD_HASHERS = [HASHERS % "NewIterations"]
    thief = User.objects.get(username="stolen")  # the sign-in's read
    staff = User.objects.get(username="stolen")
    staff.set_password("locked-out-new-5678")
    staff.save()
    assert thief.check_password(PASSWORD)  # checked against what it read: re-hashed and saved
    stored = User.objects.get(username="stolen")
    assert stored.check_password("locked-out-new-5678") and not stored.check_password(PASSWORD)

    # with nothing changed meanwhile the re-hash is written, as Django does
    User.objects.create_user("upgraded", password=PASSWORD)
    assert User.objects.get(username="upgraded").password.startswith("pbkdf2_sha256$2000$")


def test_a_refresh_racing_a_password_change_deadlocks_neither():
    """The refresh blacklists the token it was given, then records the next one (a row that points
    at the user); a password change meanwhile locks the user and blacklists every live token, the
    same one included, so it waits for the refresh. The refresh's insert must not wait for the
    change's lock of the user: with FOR UPDATE it did, and PostgreSQL aborted one ("deadlock
    detected"), so a stolen refresh token refreshed in a loop could make a password change fail."""
    import threading
    import uuid
    from datetime import timedelta

    from django.db import connection, transaction
    from django.utils import timezone
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    from accounts.tokens import RefreshToken
    from tests.polling import until_sync

    user = User.objects.create_user("racer", password=PASSWORD)
    RefreshToken.for_user(user)
    given = OutstandingToken.objects.get(user=user)
    failures: list[BaseException] = []

    def change_password() -> None:
        try:
            staff = User.objects.get(pk=user.pk)
            staff.set_password("another-pass-5678")
            staff.save()  # as manage.py changepassword and the admin's password page
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            connection.close()

    changer = threading.Thread(target=change_password)
    with transaction.atomic():  # the refresh (accounts.apis.TokenRefreshInput.validate)
        BlacklistedToken.objects.get_or_create(token=given)
        changer.start()
        with connection.cursor() as cursor:  # the change waits for this transaction's blacklisting

            def change_waits() -> bool:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                return cursor.fetchone()[0] > 0

            until_sync(change_waits, timeout=10, what="the password change to wait on the refresh")
        now = timezone.now()
        OutstandingToken.objects.create(
            user=user, jti=uuid.uuid4().hex, token="next", created_at=now, expires_at=now + timedelta(days=1)
        )
    changer.join(20)
    assert not changer.is_alive() and failures == []
    # the change went through (a token the refresh minted meanwhile names the old counter: refused)
    assert User.objects.get(pk=user.pk).credentials_version == 1
    assert BlacklistedToken.objects.filter(token=given).count() == 1
