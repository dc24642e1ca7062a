from django.urls import path

from axisor.realtime.consumers import EventsConsumer

websocket_urlpatterns = [
    path("ws", EventsConsumer.as_asgi()),
]
