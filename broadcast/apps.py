from django.apps import AppConfig


class BroadcastConfig(AppConfig):
    name = "broadcast"
    # The label the tables and migrations were created under: kept, so existing databases need no change.
    label = "realtime"
    verbose_name = "Event log"
