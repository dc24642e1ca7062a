from django.urls import path

from gateway.events_consumer import EventsConsumer
from gateway.orders_consumer import OrderUpdatesConsumer

websocket_urlpatterns = [
    path("ws", EventsConsumer.as_asgi()),
    path("ws/orders", OrderUpdatesConsumer.as_asgi()),
]
