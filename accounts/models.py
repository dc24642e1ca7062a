"""Users of the platform: Django users with an account tier."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class Tier(models.TextChoices):
    BASIC = "basic", "Basic"
    PREMIUM = "premium", "Premium"
    ENTERPRISE = "enterprise", "Enterprise"


class User(AbstractUser):
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.BASIC, db_index=True)

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
