"""python manage.py create_account NAME --password PW --tier basic|premium|enterprise [--staff]"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tier
from accounts.services import account_upsert


class Command(BaseCommand):
    help = "Create an account, or update the password, tier and staff flag of an existing one."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--tier", choices=Tier.values, default=Tier.BASIC)
        parser.add_argument("--staff", action="store_true", help="staff: may use admin rooms and internal APIs")
        parser.add_argument("--superuser", action="store_true", help="superuser (implies --staff)")

    def handle(self, *args, username, password, tier, staff, superuser, **options):
        try:
            user, created = account_upsert(
                username=username, password=password, tier=tier, staff=staff, superuser=superuser
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        verb = "created" if created else "updated"
        role = "superuser" if user.is_superuser else "staff" if user.is_staff else "user"
        self.stdout.write(f"{verb} {user.username} (id {user.pk}, tier {user.tier}, {role})")
