"""Run the notification delivery worker as its own process (set AXISOR_BACKGROUND=0 on the
servers to use only dedicated workers). Several workers may run at once."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from notifications.delivery import deliver_due


class Command(BaseCommand):
    help = "Deliver due notifications (email, webhook, in-app status), retrying with backoff."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="deliver what is due now, then exit")

    def handle(self, *args, once: bool, **options):
        poll = settings.AXISOR_NOTIFICATIONS["POLL_SECONDS"]
        while True:
            done = deliver_due()
            if once and done == 0:
                return
            if done == 0:
                time.sleep(poll)  # nothing due: poll again
