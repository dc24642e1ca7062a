"""python manage.py create_account NAME --password PW --tier basic|premium|enterprise [--staff] [--balance AMOUNT]"""

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Tier
from accounts.services import account_upsert
from ledger.models import MONEY_QUANT, EntryKind
from ledger.selectors import account_balance
from ledger.services import ledger_post


class Command(BaseCommand):
    help = "Create an account, or update the password, tier and staff flag of an existing one."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--tier", choices=Tier.values, default=Tier.BASIC)
        parser.add_argument("--staff", action="store_true", help="staff: may use admin rooms and internal APIs")
        parser.add_argument("--superuser", action="store_true", help="superuser (implies --staff)")
        parser.add_argument(
            "--balance",
            help="set the cash balance to this amount (a ledger adjustment for the difference);"
            " without it a new account starts at 0 and an existing one keeps its balance",
        )

    def handle(self, *args, username, password, tier, staff, superuser, balance, **options):
        target = None
        if balance is not None:
            try:
                target = Decimal(balance)
            except InvalidOperation:
                raise CommandError(f"--balance must be a number, not {balance!r}") from None
            if (
                not target.is_finite()
                or target < 0
                or target > Decimal("1e12")
                or target != target.quantize(MONEY_QUANT)
            ):
                raise CommandError("--balance must be between 0 and 1,000,000,000,000 with at most 8 decimals")
        try:
            with transaction.atomic():
                user, created = account_upsert(
                    username=username, password=password, tier=tier, staff=staff, superuser=superuser
                )
                if target is not None:
                    current, _ = account_balance(user_id=user.pk)
                    ledger_post(
                        user_id=user.pk,
                        kind=EntryKind.ADJUSTMENT,
                        amount=target - current,
                        note="create_account --balance",
                    )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        verb = "created" if created else "updated"
        role = "superuser" if user.is_superuser else "staff" if user.is_staff else "user"
        money, currency = account_balance(user_id=user.pk)
        self.stdout.write(
            f"{verb} {user.username} (id {user.pk}, tier {user.tier}, {role}, balance {money.normalize():f} {currency})"
        )
