"""Positions, Margin Guard settings and executions in the Django admin. Positions and executions
are read-only; staff close a position or change a user's guard through the same services as the
API, so the change broadcasts like any other."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from core.errors import Conflict

from .models import GuardAction, MarginGuardConfig, MarginGuardExecution, Position
from .services import margin_guard_config_set, position_close


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = (
        "id", "user", "instrument", "side", "quantity", "entry_price", "leverage", "liquidation_price",
        "guard_price", "guard_armed", "realized_pnl", "uncovered_loss", "status", "close_reason", "opened_at",
        "closed_at",
    )  # fmt: skip
    list_filter = ("status", "side", "instrument", "close_reason")
    search_fields = ("user__username",)
    actions = ["close_positions"]

    def has_close_permission(self, request) -> bool:
        """The close action's: positions are read-only here (has_change_permission), but one with
        the permission to change positions may close them."""
        return request.user.has_perm("margin.change_position")

    @admin.action(description="Close the selected positions (MARKET order)", permissions=["close"])
    def close_positions(self, request, queryset):
        placed = 0
        for position in queryset.select_related("instrument", "user"):
            try:
                position_close(position=position)
                placed += 1
            except (Conflict, ValidationError) as exc:
                self.message_user(request, f"pos_{position.pk}: {exc}", messages.WARNING)
        self.message_user(request, f"{placed} close order(s) placed")


class ConfigForm(forms.ModelForm):
    class Meta:
        model = MarginGuardConfig
        fields = ("user", "enabled", "threshold", "action", "cooldown_seconds")
        widgets = {"action": forms.Select(choices=GuardAction.choices)}


@admin.register(MarginGuardConfig)
class MarginGuardConfigAdmin(admin.ModelAdmin):
    form = ConfigForm
    list_display = ("user", "enabled", "threshold", "action", "cooldown_seconds", "updated_at")
    list_filter = ("enabled", "action")
    search_fields = ("user__username",)

    def get_readonly_fields(self, request, obj=None):
        return ("user",) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        # through the service: validation, and the user's open positions re-indexed
        margin_guard_config_set(
            user=obj.user,
            enabled=obj.enabled,
            threshold=obj.threshold,
            action=obj.action,
            cooldown_seconds=obj.cooldown_seconds,
        )


@admin.register(MarginGuardExecution)
class MarginGuardExecutionAdmin(ReadOnlyAdmin):
    list_display = ("execution_id", "user", "action", "trigger", "threshold", "checked", "at_risk", "executed_at")
    list_filter = ("action", "trigger")
    search_fields = ("execution_id", "user__username")
    date_hierarchy = "executed_at"

    @admin.display(description="positions checked")
    def checked(self, obj):
        return obj.summary.get("positionsChecked")

    @admin.display(description="at risk")
    def at_risk(self, obj):
        return obj.summary.get("positionsAtRisk")
