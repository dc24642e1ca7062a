"""The staff panel under /panel/: server-rendered pages, live over /ws (admin:staff) in the browser.

Views are thin: check the form, call one service, redirect with a message (303, post/redirect/get).
Bad input re-renders the page with the errors and a 400 (409 when the state refuses, 404 when
the object is gone), and changes nothing. Every form carries Django's CSRF token.
"""

from __future__ import annotations

from datetime import timedelta
from functools import wraps

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.views import LoginView, LogoutView, redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.forms import StaffLoginForm
from accounts.services import account_disconnect
from accounts.tokens import AccessToken
from core.errors import Conflict, NotFound
from notifications.services import notification_broadcast, notification_create
from orders.models import OrderSession
from orders.services import order_cancel, order_reject, order_session_revoke
from system.models import NoticeKind, SystemNotice
from system.services import system_notice_create, system_notice_end
from wire import iso

from . import permissions, selectors
from .forms import ComposeForm, DisconnectForm, MaintenanceForm, RejectForm, ServiceStatusForm

# Both system-notice forms have a "message": distinct element ids keep their labels apart.
MAINTENANCE_IDS, SERVICE_IDS = "maint_%s", "svc_%s"
# The panel's socket token: short-lived, renewed by the page when the server sends auth_expiring.
SOCKET_TOKEN_LIFETIME = timedelta(minutes=5)


def _refused(request: HttpRequest, json: bool, code: str, detail: str) -> HttpResponse:
    if json:  # the API's error shape (core/api.py)
        return JsonResponse({"code": code, "detail": detail}, status=403)
    raise PermissionDenied(detail)


def panel_view(*, page: str = "dashboard", needs: tuple[str, ...] = (), json: bool = False):
    """Anonymous: to the login page (a JSON endpoint: 403). Signed in but not staff, or without
    what the page or action needs (panel/permissions.py): 403, before anything is read or done."""

    def decorate(view):
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs):
            user = request.user
            if not user.is_authenticated:
                if json:
                    return _refused(request, json, "not_authenticated", "sign in to the panel first")
                return redirect_to_login(request.get_full_path(), reverse("panel:login"))
            if not user.is_staff:
                return _refused(request, json, "permission_denied", "staff only")
            if not permissions.may_open(user, page):
                return _refused(request, json, "permission_denied", f"you may not open the {page} page")
            missing = [a for a in needs if not permissions.may(user, a)]
            if missing:
                wanted = " or ".join(permissions.ABILITIES[missing[0]])
                return _refused(request, json, "permission_denied", f"this needs the permission {wanted}")
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    """A panel page, with what the signed-in staff member may see and do (``can``)."""
    can = context.get("can") or permissions.abilities(request.user)
    return render(request, template, {**context, "can": can}, status=status)


class PanelLoginView(LoginView):
    template_name = "panel/login.html"
    authentication_form = StaffLoginForm
    redirect_authenticated_user = True

    def get_default_redirect_url(self):
        return reverse("panel:dashboard")


class PanelLogoutView(LogoutView):
    next_page = "panel:login"


def _see_other(url: str) -> HttpResponseRedirect:
    """Post/redirect/get with 303: the browser follows with a GET."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def _messages_of(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return str(error)


def _status_of(error: Exception) -> int:
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, NotFound):
        return 404
    return 400


# ---- socket token ---------------------------------------------------------------------------


@require_POST
@panel_view(json=True)
def socket_token(request: HttpRequest) -> JsonResponse:
    """A short-lived access token for the page's /ws socket (the page never sees a password).
    POST with the CSRF token, so another site cannot mint one with the staff member's cookie.
    Any staff member may have one: it is what signing in to the API gives them, and what the
    socket then carries is decided by the rooms (admin:staff needs realtime.view_eventlog)."""
    token = AccessToken.for_user(request.user)
    token.set_exp(lifetime=SOCKET_TOKEN_LIFETIME)
    return JsonResponse({"token": str(token), "expiresAt": iso(token.current_time + SOCKET_TOKEN_LIFETIME)})


# ---- dashboard and event stream -------------------------------------------------------------


@require_GET
@panel_view()
def dashboard(request: HttpRequest) -> HttpResponse:
    can = permissions.abilities(request.user)
    shown = selectors.dashboard(failures=can["notifications"], notices=can["notices"], history=can["events"])
    return _render(request, "panel/dashboard.html", {"page": "dashboard", "can": can, **shown})


@require_GET
@panel_view(page="events")
def events(request: HttpRequest) -> HttpResponse:
    return _render(request, "panel/events.html", {"page": "events", "recent": selectors.recent_events()})


# ---- orders ---------------------------------------------------------------------------------


def _orders_page(request: HttpRequest, *, status: int = 200, reject_form: RejectForm | None = None) -> HttpResponse:
    filters = {k: request.GET.get(k, "").strip()[:40] for k in ("status", "username", "symbol")}
    context = {
        "page": "orders",
        "orders": selectors.orders_blotter(**filters),
        "filters": filters,
        "statuses": selectors.ORDER_STATUSES,
        "reject_form": reject_form,
    }
    return _render(request, "panel/orders.html", context, status=status)


@require_GET
@panel_view(page="orders")
def orders(request: HttpRequest) -> HttpResponse:
    return _orders_page(request)


@require_POST
@panel_view(page="orders", needs=("order_change",))
def order_cancel_view(request: HttpRequest, order_id: str) -> HttpResponse:
    try:
        order_cancel(order=order_id)
    except (Conflict, NotFound, ValidationError) as exc:
        messages.error(request, f"Order {order_id} not cancelled: {_messages_of(exc)}")
        return _orders_page(request, status=_status_of(exc))
    messages.success(request, f"Order {order_id} cancelled.")
    return _see_other(reverse("panel:orders"))


@require_POST
@panel_view(page="orders", needs=("order_change",))
def order_reject_view(request: HttpRequest, order_id: str) -> HttpResponse:
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Order {order_id} not rejected: a rejection needs a reason.")
        return _orders_page(request, status=400, reject_form=form)
    try:
        order_reject(order=order_id, reason=form.cleaned_data["reason"])
    except (Conflict, NotFound, ValidationError) as exc:
        messages.error(request, f"Order {order_id} not rejected: {_messages_of(exc)}")
        return _orders_page(request, status=_status_of(exc))
    messages.success(request, f"Order {order_id} rejected.")
    return _see_other(reverse("panel:orders"))


# ---- notifications --------------------------------------------------------------------------


def _notifications_page(request: HttpRequest, form: ComposeForm, status: int = 200) -> HttpResponse:
    can = permissions.abilities(request.user)
    recent = selectors.recent_notifications() if can["notifications"] else []
    context = {"page": "notifications", "can": can, "form": form, "notifications": recent}
    return _render(request, "panel/notifications.html", context, status=status)


@panel_view(page="notifications")
def notifications(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _notifications_page(request, ComposeForm())
    if request.method != "POST":
        return HttpResponse(status=405)
    if not permissions.may(request.user, "compose"):  # NotificationAdmin.compose's
        raise PermissionDenied("sending notifications needs notifications.add_notification")
    form = ComposeForm(request.POST)
    if not form.is_valid():
        return _notifications_page(request, form, status=400)
    data = form.cleaned_data
    fields = {k: data[k] for k in ("title", "message", "type", "category")}
    try:
        if data["audience"] == "user":
            notification_create(user=data["user"], **fields)
            count = 1
        else:
            count = notification_broadcast(audience=data["audience"], **fields)
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return _notifications_page(request, form, status=400)
    messages.success(request, f"Sent {count} notification(s).")
    return _see_other(reverse("panel:notifications"))


# ---- system notices -------------------------------------------------------------------------


def _system_page(request: HttpRequest, *, maintenance=None, service=None, status: int = 200) -> HttpResponse:
    can = permissions.abilities(request.user)
    context = {
        "page": "system",
        "can": can,
        "maintenance_form": maintenance or MaintenanceForm(auto_id=MAINTENANCE_IDS),
        "service_form": service or ServiceStatusForm(auto_id=SERVICE_IDS),
        **(selectors.notices() if can["notices"] else {"in_force": [], "recent": []}),
    }
    return _render(request, "panel/system.html", context, status=status)


@require_GET
@panel_view(page="system")
def system(request: HttpRequest) -> HttpResponse:
    return _system_page(request)


def _create_notice(request: HttpRequest, form, kind: str, key: str) -> HttpResponse:
    if not form.is_valid():
        return _system_page(request, **{key: form}, status=400)
    try:
        system_notice_create(kind=kind, actor=request.user, **form.cleaned_data)
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return _system_page(request, **{key: form}, status=400)
    messages.success(request, "Notice published to every connection.")
    return _see_other(reverse("panel:system"))


@require_POST
@panel_view(page="system", needs=("notice_add",))
def maintenance_create(request: HttpRequest) -> HttpResponse:
    form = MaintenanceForm(request.POST, auto_id=MAINTENANCE_IDS)
    return _create_notice(request, form, NoticeKind.MAINTENANCE, "maintenance")


@require_POST
@panel_view(page="system", needs=("notice_add",))
def service_status_create(request: HttpRequest) -> HttpResponse:
    form = ServiceStatusForm(request.POST, auto_id=SERVICE_IDS)
    return _create_notice(request, form, NoticeKind.SERVICE_STATUS, "service")


@require_POST
@panel_view(page="system", needs=("notice_end",))
def notice_end(request: HttpRequest, notice_id: int) -> HttpResponse:
    notice = SystemNotice.objects.filter(pk=notice_id).first()
    if notice is None:
        messages.error(request, f"No notice {notice_id}.")
        return _system_page(request, status=404)
    if notice.ended_at is not None:
        messages.error(request, f"Notice {notice_id} has already ended.")
        return _system_page(request, status=409)
    system_notice_end(notice=notice)
    messages.success(request, f"Notice {notice_id} ended.")
    return _see_other(reverse("panel:system"))


# ---- users ----------------------------------------------------------------------------------


@require_GET
@panel_view(page="users")
def users(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:150]
    can = permissions.abilities(request.user)
    rows = selectors.users_page(query=query, money=can["money"])
    return _render(request, "panel/users.html", {"page": "users", "can": can, "rows": rows, "q": query})


def _guarded(request: HttpRequest, user) -> bool:
    """Another staff or superuser account is a superuser's to act on (as in AccountAdmin)."""
    return (user.is_staff or user.is_superuser) and user.pk != request.user.pk and not request.user.is_superuser


def _user_page(request: HttpRequest, user, status: int = 200) -> HttpResponse:
    can = permissions.abilities(request.user)
    context = {
        "page": "users",
        "can": can,
        "subject": user,
        "guarded": _guarded(request, user),
        "disconnect_form": DisconnectForm(),
        **selectors.user_detail(user, money=can["money"], sessions=can["sessions"], orders=can["orders"]),
    }
    return _render(request, "panel/user_detail.html", context, status=status)


@require_GET
@panel_view(page="users")
def user_detail(request: HttpRequest, user_id: int) -> HttpResponse:
    return _user_page(request, get_object_or_404(get_user_model(), pk=user_id))


@require_GET
@panel_view(page="users", json=True)
def user_connections(request: HttpRequest, user_id: int) -> JsonResponse:
    """Live connection counts for the user page (it asks every few seconds)."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return JsonResponse({"code": "not_found", "detail": f"no user {user_id}"}, status=404)
    return JsonResponse({"userId": str(user.pk), "connections": selectors.user_connections(user)})


@require_POST
@panel_view(page="users", needs=("disconnect",))
def user_disconnect(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    if _guarded(request, user):
        raise PermissionDenied("another staff account's sockets are a superuser's to disconnect")
    form = DisconnectForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose which sockets to disconnect: all, /ws or /ws/orders.")
        return _user_page(request, user, status=400)
    account_disconnect(user=user, endpoints=form.endpoints())
    messages.success(request, f"Disconnecting {user.username} from {', '.join(form.endpoints())} (close code 4004).")
    return _see_other(reverse("panel:user", args=[user.pk]))


@require_POST
@panel_view(page="users", needs=("session_revoke",))
def session_revoke(request: HttpRequest, user_id: int, session: str) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    if _guarded(request, user):  # as Disconnect (the second review: a superuser's sessions were open)
        raise PermissionDenied("another staff account's sessions are a superuser's to revoke")
    found = OrderSession.objects.filter(user=user, session=session).first()
    if found is None:
        messages.error(request, f"{user.username} has no session {session}.")
        return _user_page(request, user, status=404)
    if found.revoked_at is not None:
        messages.error(request, f"Session {session} was already revoked.")
        return _user_page(request, user, status=409)
    order_session_revoke(session=found)
    messages.success(request, f"Session {session} revoked; its /ws/orders sockets close with 4003.")
    return _see_other(reverse("panel:user", args=[user.pk]))


# ---- market ---------------------------------------------------------------------------------


@require_GET
@panel_view(page="market")
def market(request: HttpRequest) -> HttpResponse:
    can = permissions.abilities(request.user)
    context = {
        "page": "market",
        "can": can,
        "rows": selectors.market_snapshots() if can["instruments"] else [],
        "executions": selectors.guard_executions() if can["guard"] else [],
    }
    return _render(request, "panel/market.html", context)
