"""Users of the platform: Django users with an account tier."""

from django.contrib.auth.models import AbstractUser
from django.db import models, transaction

from .signals import account_access_changed, account_password_changed


class Tier(models.TextChoices):
    BASIC = "basic", "Basic"
    PREMIUM = "premium", "Premium"
    ENTERPRISE = "enterprise", "Enterprise"


class User(AbstractUser):
    """A new password on an existing account, however it is set (``account_upsert``, the admin's
    password page, ``manage.py changepassword``, any ``set_password`` then ``save``), ends the
    credentials issued before it: ``save`` sends ``account_password_changed`` in its transaction,
    and its receivers revoke the refresh tokens and the order-socket sessions and close the open
    sockets (an outside test: ``changepassword`` left them all). Not Django's re-hash of the same
    password when its hasher changed, at a sign-in (``check_password``). A deactivation, however
    it is saved, and a password made unusable (the admin's lock-out) end them too.

    ``credentials_version`` is what a token's credentials claim names (accounts/tokens.py): raised,
    in the transaction that ends them (``accounts.services.credentials_revoke``), when the password
    really changes or the account is deactivated, never by a re-hash, so a sign-in that re-hashes
    leaves the user's other devices signed in."""

    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.BASIC, db_index=True)
    credentials_version = models.PositiveIntegerField(default=0, editable=False)
    _rehashing = False
    _checked_hash = ""
    _password_replaced = False
    ACCESS_FLAGS = ("is_active", "is_staff", "is_superuser")  # what an open socket's rooms depend on

    def set_password(self, raw_password):
        super().set_password(raw_password)
        if self.pk is not None and not self._rehashing:
            self._password_replaced = True

    def set_unusable_password(self):
        # The admin's "password-based authentication: disabled" (a lock-out) sets the hash without
        # set_password: it ends the credentials as a new password does (an outside review: the
        # refresh token kept minting access tokens after it).
        super().set_unusable_password()
        if self.pk is not None:
            self._password_replaced = True

    def check_password(self, raw_password):
        self._rehashing = True  # Django's upgrade of the hash calls set_password with the same one
        self._checked_hash = self.password
        try:
            return super().check_password(raw_password)
        finally:
            self._rehashing = False

    async def acheck_password(self, raw_password):
        self._rehashing = True
        self._checked_hash = self.password
        try:
            return await super().acheck_password(raw_password)
        finally:
            self._rehashing = False

    def save(self, *args, **kwargs):
        """Also tells the user's open sockets to re-check (``account_access_changed``, in the same
        transaction) when the active, staff or superuser flag changed, however it was saved: a
        shell's or a script's ``save()`` as much as a service's or the admin's."""
        fields = kwargs.get("update_fields")
        if self._rehashing and fields is not None and set(fields) == {"password"} and self.pk is not None:
            # Django's upgrade of the hash at a sign-in: written only over the hash it checked. A
            # password changed meanwhile (staff locking a stolen account out while its thief signs
            # in with the old one) stays; the re-hash of the old password wrote it back.
            User.objects.filter(pk=self.pk, password=self._checked_hash).update(password=self.password)
            return None
        flags_saved = self.ACCESS_FLAGS if fields is None else tuple(f for f in self.ACCESS_FLAGS if f in fields)
        if not self._password_replaced and (self._state.adding or not flags_saved):
            return super().save(*args, **kwargs)
        with transaction.atomic():
            before = None
            if not self._state.adding and flags_saved:
                # Locked (a revocation, credentials_revoke, waits for this save or is read by it),
                # FOR NO KEY UPDATE as every other lock of the row: a full FOR UPDATE also waits for
                # rows being inserted that point at the user, and a refresh inserting its token
                # while this save's revocation waited on the refresh's blacklisting deadlocked.
                row = (
                    User.objects.select_for_update(no_key=True)
                    .filter(pk=self.pk)
                    .values(*flags_saved, "credentials_version")
                    .first()
                )
                if row is not None:
                    before = tuple(row[f] for f in flags_saved)
                    # a stale copy of the user must not write an older counter back: that would
                    # revive the tokens a revocation ended since the copy was read
                    self.credentials_version = max(self.credentials_version, row["credentials_version"])
            super().save(*args, **kwargs)
            # A deactivation ends the credentials as a new password does, however it is saved:
            # re-activated, the account's old tokens stay ended.
            deactivated = (
                before is not None
                and "is_active" in flags_saved
                and before[flags_saved.index("is_active")]
                and not self.is_active
            )
            if self._password_replaced or deactivated:
                self._password_replaced = False
                # its receivers end the credentials and tell the open sockets (accounts/receivers.py)
                account_password_changed.send(sender=User, user=self)
            elif before is not None and before != tuple(getattr(self, f) for f in flags_saved):
                account_access_changed.send(sender=User, user=self)
        return None

    class Meta:
        db_table = "accounts_user"
        # The staff panel's socket disconnect has no admin counterpart: a permission of its own, so
        # cutting a client's sockets needs no power to edit accounts (panel/permissions.py).
        permissions = [("disconnect_user", "Can disconnect a user's sockets")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(tier__in=[t.value for t in Tier]), name="accounts_user_tier_valid"
            )
        ]
