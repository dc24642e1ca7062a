"""Orders in the Django admin: read-only, with history and trades inline; staff cancel or reject
through the same services as the API, so the change broadcasts like any other."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ValidationError
from django.db.models import Q

from core.errors import Conflict

from .models import Order, OrderSession, OrderUpdate, Trade
from .services import order_cancel, order_reject, order_session_revoke


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class OrderUpdateInline(ReadOnlyInline):
    model = OrderUpdate
    fields = ("version", "update_type", "created_at", "snapshot")
    readonly_fields = fields
    ordering = ("version",)


class TradeInline(ReadOnlyInline):
    model = Trade
    fields = ("trade_id", "exec_id", "quantity", "price", "time")
    readonly_fields = fields


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, max_length=255, help_text="reason (for reject)")


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = (
        "order_id", "user", "instrument", "transaction_type", "order_type", "quantity",
        "filled_quantity", "average_price", "order_status", "version", "created_at",
    )  # fmt: skip
    list_filter = ("order_status", "order_type", "transaction_type", "instrument")
    search_fields = ("order_id", "user__username")
    inlines = [OrderUpdateInline, TradeInline]
    action_form = ReasonActionForm
    actions = ["cancel_orders", "reject_orders"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _apply(self, request, queryset, action, verb: str) -> None:
        done, refused = 0, []
        for order in queryset:
            try:
                action(order)
                done += 1
            except (Conflict, ValidationError) as exc:
                refused.append(f"{order.order_id}: {'; '.join(getattr(exc, 'messages', [str(exc)]))}")
        if done:
            self.message_user(request, f"{verb} {done} order(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.ERROR)

    @admin.action(description="Cancel selected orders", permissions=["change"])
    def cancel_orders(self, request, queryset):
        self._apply(request, queryset, lambda o: order_cancel(order=o), "Cancelled")

    @admin.action(description="Reject selected orders (give a reason)", permissions=["change"])
    def reject_orders(self, request, queryset):
        reason = request.POST.get("reason", "")
        self._apply(request, queryset, lambda o: order_reject(order=o, reason=reason), "Rejected")


@admin.register(Trade)
class TradeAdmin(admin.ModelAdmin):
    list_display = ("trade_id", "order", "user", "quantity", "price", "time")
    search_fields = ("trade_id", "exec_id", "order__order_id")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(OrderSession)
class OrderSessionAdmin(admin.ModelAdmin):
    list_display = ("session", "user", "created_at", "expires_at", "revoked_at")
    fields = ("session", "user", "created_at", "expires_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected sessions (closes their sockets)", permissions=["change"])
    def revoke(self, request, queryset):
        spared = 0
        if not request.user.is_superuser:
            # Another staff account's sessions are a superuser's to revoke, as its account is
            # (accounts/admin.py) and as the panel's Revoke does (the second review).
            guarded = queryset.filter(Q(user__is_staff=True) | Q(user__is_superuser=True)).exclude(user=request.user)
            spared = guarded.count()
            queryset = queryset.exclude(pk__in=guarded.values("pk"))
        for session in queryset:
            order_session_revoke(session=session)
        self.message_user(request, f"Revoked {queryset.count()} session(s).", messages.SUCCESS)
        if spared:
            self.message_user(
                request, f"Left {spared} session(s) of other staff accounts: a superuser's to revoke.", messages.WARNING
            )
