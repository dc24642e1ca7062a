"""python manage.py create_account NAME --password PW --tier basic|premium|enterprise [--staff] [--balance AMOUNT]

Here, above the margin model, not in ``accounts``: a balance set lower is checked against what the
account's positions and working orders hold (``margin.account.account_adjust``)."""

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Tier
from accounts.services import account_upsert
from core.errors import Conflict
from ledger.models import MONEY_QUANT, EntryKind
from ledger.selectors import account_balance
from ledger.services import account_lock
from margin.account import account_adjust, account_figures


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
                    self._set_balance(user.pk, user.username, target)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        verb = "created" if created else "updated"
        role = "superuser" if user.is_superuser else "staff" if user.is_staff else "user"
        money, currency = account_balance(user_id=user.pk)
        self.stdout.write(
            f"{verb} {user.username} (id {user.pk}, tier {user.tier}, {role}, balance {money.normalize():f} {currency})"
        )

    def _set_balance(self, user_id: int, username: str, target: Decimal) -> None:
        """An adjustment for the difference, through the service that keeps cash from going below
        what the open positions and working orders hold (a lower balance is refused, never forced:
        an account set to 100 while an order held 4,020 had -3,920 available)."""
        current = account_lock(user_id).balance
        if target == current:
            return
        try:
            account_adjust(
                user_id=user_id, kind=EntryKind.ADJUSTMENT, amount=target - current, note="create_account --balance"
            )
        except Conflict:
            figures = account_figures(user_id=user_id)
            currency = figures.currency
            raise CommandError(
                f"--balance {target.normalize():f} is below the {figures.reserved:,.2f} {currency} {username}'s open"
                " positions and working orders hold (margin and fees): the lowest balance it can be set to now is"
                f" {min(figures.reserved, current):,.2f} {currency}"
            ) from None
