"""Create the demo accounts the README talks about (idempotent), and give alice a Margin Guard demo:
two leveraged market orders (the paper venue fills them on its first step) and a guard tight
enough to fire within a minute or two of the simulated market."""

from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.services import account_upsert
from ledger.models import EntryKind
from ledger.selectors import account_balance
from ledger.services import ledger_post
from margin.models import Position
from margin.services import margin_guard_config_set
from orders.models import LIVE, Order
from orders.services import order_place

DEMO_ACCOUNTS = [
    # username, password, tier, staff, superuser
    ("alice", "alice-demo-1", "premium", False, False),
    ("bob", "bob-demo-12", "basic", False, False),
    ("carol", "carol-demo-1", "enterprise", False, False),
    ("admin", "admin-demo-1", "enterprise", True, True),
]

# symbol, side, quantity, leverage: a long and a short, so whichever way the walk goes one of them
# heads for its guard price (BTC_USD 20x: liquidation 4.5 % away, guard at 0.315 %; ETH_USD 25x:
# liquidation 3 % away, guard at 0.21 %).
# Demo accounts start funded (USD); seed_demo tops them up to this, never down.
DEMO_BALANCES = {"alice": Decimal(100_000), "bob": Decimal(10_000), "carol": Decimal(1_000_000)}
DEMO_POSITIONS = [("BTC_USD", "BUY", "0.01", 20), ("ETH_USD", "SELL", "0.1", 25)]


class Command(BaseCommand):
    help = "Create or reset the demo accounts (alice, bob, carol, admin) and alice's Margin Guard demo."

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            # The demo resets "admin" to a superuser with the password printed in the README.
            raise CommandError(
                "seed_demo refuses to run with AXISOR_ENV=production: it would make 'admin' a superuser with a"
                " published password. Create real accounts with `manage.py create_account` instead."
            )
        users = {}
        for username, password, tier, staff, superuser in DEMO_ACCOUNTS:
            users[username], _ = account_upsert(
                username=username, password=password, tier=tier, staff=staff, superuser=superuser
            )
            funded = DEMO_BALANCES.get(username, Decimal(0))
            current, _ = account_balance(user_id=users[username].pk)
            if current < funded:  # top a demo account up to its starting balance; never take money away
                ledger_post(
                    user_id=users[username].pk, kind=EntryKind.DEPOSIT, amount=funded - current, note="demo funds"
                )
            self.stdout.write(
                f"  {username:<6} password {password:<13} tier {tier}{' (staff, superuser)' if superuser else ''}"
                f", balance at least {DEMO_BALANCES.get(username, 0):,} USD"
            )
        self.margin_demo(users["alice"])

    def margin_demo(self, alice) -> None:
        margin_guard_config_set(
            user=alice, enabled=True, threshold=Decimal("0.93"), action="notify", cooldown_seconds=60
        )
        placed = []
        for symbol, side, quantity, leverage in DEMO_POSITIONS:
            held = Position.objects.filter(user=alice, instrument__symbol=symbol, status="open").exists()
            working = Order.objects.filter(user=alice, instrument__symbol=symbol, order_status__in=LIVE).exists()
            if held or working:
                continue
            order_place(
                user=alice,
                trading_symbol=symbol,
                exchange=None,
                order_type="MARKET",
                transaction_type=side,
                quantity=Decimal(quantity),
                leverage=leverage,
            )
            placed.append(f"{side} {quantity} {symbol} {leverage}x")
        self.stdout.write(
            "  alice's Margin Guard: on, threshold 0.93, notify, cooldown 60 s"
            + (f"; market orders placed: {', '.join(placed)}" if placed else "; positions already open")
        )
