from django.urls import path

from . import views

app_name = "panel"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login", views.PanelLoginView.as_view(), name="login"),
    path("logout", views.PanelLogoutView.as_view(), name="logout"),
    path("token", views.socket_token, name="token"),
    path("events", views.events, name="events"),
    path("orders", views.orders, name="orders"),
    path("orders/<str:order_id>/cancel", views.order_cancel_view, name="order-cancel"),
    path("orders/<str:order_id>/reject", views.order_reject_view, name="order-reject"),
    path("notifications", views.notifications, name="notifications"),
    path("system", views.system, name="system"),
    path("system/maintenance", views.maintenance_create, name="maintenance-create"),
    path("system/status", views.service_status_create, name="service-status-create"),
    path("system/<int:notice_id>/end", views.notice_end, name="notice-end"),
    path("users", views.users, name="users"),
    path("users/<int:user_id>", views.user_detail, name="user"),
    path("users/<int:user_id>/connections", views.user_connections, name="user-connections"),
    path("users/<int:user_id>/disconnect", views.user_disconnect, name="user-disconnect"),
    path("users/<int:user_id>/sessions/<str:session>/revoke", views.session_revoke, name="session-revoke"),
    path("market", views.market, name="market"),
]
