from django.urls import path

from axisor.realtime.consumers import EventsConsumer
from axisor.realtime.order_consumer import OrderUpdatesConsumer

websocket_urlpatterns = [
    path("ws", EventsConsumer.as_asgi()),
    path("ws/orders", OrderUpdatesConsumer.as_asgi()),
]
