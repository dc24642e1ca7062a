"""Notifications in the Django admin: filters and search, deliveries inline, resend / mark read
through the services, and a compose form for one user, a tier or everyone."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path

from accounts.models import Tier

from .models import Category, Delivery, Notification, NotificationType
from .services import notification_broadcast, notification_create, notification_mark_read, notification_resend


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = (
        "method",
        "status",
        "attempts",
        "last_error",
        "error_detail",
        "delivered_at",
        "next_attempt_at",
        "claimed_until",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class ComposeForm(forms.Form):
    audience = forms.ChoiceField(
        choices=[("user", "One user"), ("all", "Everyone"), *[(t.value, f"All {t.label} accounts") for t in Tier]]
    )
    username = forms.CharField(required=False, help_text="for one user")
    title = forms.CharField(max_length=200)
    message = forms.CharField(widget=forms.Textarea, max_length=2000)
    type = forms.ChoiceField(choices=NotificationType.choices)
    category = forms.ChoiceField(choices=Category.choices, initial=Category.SYSTEM)

    def clean(self):
        data = super().clean()
        assert data is not None  # forms.Form.clean returns cleaned_data, a dict
        if data.get("audience") == "user":
            user = get_user_model().objects.filter(username=data.get("username"), is_active=True).first()
            if user is None:
                raise ValidationError({"username": "no active user with this name"})
            data["user"] = user
        return data


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "title", "type", "category", "read", "created_at")
    list_filter = ("type", "category", "read", "deliveries__status", "deliveries__method", "created_at")
    search_fields = ("title", "message", "user__username")
    readonly_fields = ("user", "title", "message", "type", "category", "data", "read", "read_at", "created_at")
    inlines = [DeliveryInline]
    actions = ["resend", "mark_read"]
    change_list_template = "admin/notifications/notification/change_list.html"

    def has_add_permission(self, request):
        return False  # compose instead: it goes through the service

    def get_urls(self):
        return [
            path("compose/", self.admin_site.admin_view(self.compose), name="notifications_compose"),
            *super().get_urls(),
        ]

    def compose(self, request):
        # admin_view checks only that the user is active staff: sending to every user is for those
        # granted to add notifications (has_add_permission above is the admin's own add form's).
        if not request.user.has_perm("notifications.add_notification"):
            raise PermissionDenied
        form = ComposeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            d = form.cleaned_data
            fields = {k: d[k] for k in ("title", "message", "type", "category")}
            if d["audience"] == "user":
                notification_create(user=d["user"], **fields)
                count = 1
            else:
                count = notification_broadcast(audience=d["audience"], **fields)
            self.message_user(request, f"Sent {count} notification(s).", messages.SUCCESS)
            return redirect("admin:notifications_notification_changelist")
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Compose notification",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/notifications/compose.html", context)

    @admin.action(description="Resend selected notifications", permissions=["change"])
    def resend(self, request, queryset):
        count = sum(notification_resend(notification=n) for n in queryset)
        self.message_user(request, f"{count} delivery(ies) queued again.", messages.SUCCESS)

    @admin.action(description="Mark selected notifications read", permissions=["change"])
    def mark_read(self, request, queryset):
        for n in queryset:
            notification_mark_read(notification=n)
        self.message_user(request, f"Marked {queryset.count()} read.", messages.SUCCESS)
