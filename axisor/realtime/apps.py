from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "axisor.realtime"
    label = "realtime"
    verbose_name = "Realtime gateway"
