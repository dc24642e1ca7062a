"""Apply the event-log retention now (servers also do it every few minutes)."""

from django.core.management.base import BaseCommand

from broadcast.history import prune


class Command(BaseCommand):
    help = "Delete events past EVENTS_RETENTION_DAYS or EVENTS_RETENTION_PER_USER behind each user's latest."

    def handle(self, *args, **options):
        self.stdout.write(f"deleted {prune()} event(s)")
