"""Create the demo accounts the README talks about (idempotent)."""

from django.core.management.base import BaseCommand

from accounts.services import account_upsert

DEMO_ACCOUNTS = [
    # username, password, tier, staff, superuser
    ("alice", "alice-demo-1", "premium", False, False),
    ("bob", "bob-demo-12", "basic", False, False),
    ("carol", "carol-demo-1", "enterprise", False, False),
    ("admin", "admin-demo-1", "enterprise", True, True),
]


class Command(BaseCommand):
    help = "Create or reset the demo accounts (alice, bob, carol, admin)."

    def handle(self, *args, **options):
        for username, password, tier, staff, superuser in DEMO_ACCOUNTS:
            account_upsert(username=username, password=password, tier=tier, staff=staff, superuser=superuser)
            self.stdout.write(
                f"  {username:<6} password {password:<13} tier {tier}{' (staff, superuser)' if superuser else ''}"
            )
