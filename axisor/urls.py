from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from accounts.apis import LogoutApi, TokenObtainApi, TokenRefreshApi
from broadcast.apis import EventsApi
from core.api import no_such_endpoint
from core.health import healthz, readyz
from core.metrics import metrics_view
from margin.apis import (
    AccountAdjustApi,
    AccountApi,
    ExecutionApi,
    LedgerApi,
    MarginGuardApi,
    MarginGuardExecutionsApi,
    OrderViewSet,
    PositionViewSet,
    TicksApi,
)
from market.apis import CandlesApi, InstrumentsApi, PriceAlertViewSet, SnapshotApi
from notifications.apis import NotificationViewSet
from orders.apis import SessionCreateApi, SessionRevokeApi, TradeViewSet
from system.apis import NoticeEndApi, NoticeListApi

router = SimpleRouter(trailing_slash=False)
router.register("orders", OrderViewSet, basename="order")
router.register("trades", TradeViewSet, basename="trade")
router.register("notifications", NotificationViewSet, basename="notification")
router.register("price-alerts", PriceAlertViewSet, basename="price-alert")
router.register("positions", PositionViewSet, basename="position")

api = [
    *router.urls,
    path("auth/sessions", SessionCreateApi.as_view(), name="order-sessions"),
    path("auth/sessions/<str:session>", SessionRevokeApi.as_view(), name="order-session"),
    path("internal/executions", ExecutionApi.as_view(), name="executions"),
    path("events", EventsApi.as_view(), name="events"),
    path("account", AccountApi.as_view(), name="account"),
    path("account/ledger", LedgerApi.as_view(), name="account-ledger"),
    path("account/<int:user_id>/adjust", AccountAdjustApi.as_view(), name="account-adjust"),
    path("margin-guard", MarginGuardApi.as_view(), name="margin-guard"),
    path("margin-guard/executions", MarginGuardExecutionsApi.as_view(), name="margin-guard-executions"),
    path("internal/ticks", TicksApi.as_view(), name="ticks"),
    path("market/instruments", InstrumentsApi.as_view(), name="instruments"),
    path("market/<str:symbol>", SnapshotApi.as_view(), name="market-snapshot"),
    path("market/<str:symbol>/candles", CandlesApi.as_view(), name="market-candles"),
    path("auth/token", TokenObtainApi.as_view(), name="token"),
    path("auth/token/refresh", TokenRefreshApi.as_view(), name="token-refresh"),
    path("auth/logout", LogoutApi.as_view(), name="logout"),
    path("system/notices", NoticeListApi.as_view(), name="system-notices"),
    path("system/notices/<int:notice_id>/end", NoticeEndApi.as_view(), name="system-notice-end"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from drf-spectacular-sidecar, its start-up script a file of its own (?script): no
    # inline script, no CDN (the CSP in settings allows neither).
    path(
        "docs",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
    re_path(r"", no_such_endpoint),  # last: whatever else is under /api/ is a JSON 404
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("panel/", include("panel.urls")),
    path("healthz", healthz),
    path("readyz", readyz),
    path("metrics", metrics_view),
    path("api/", include(api)),
]
