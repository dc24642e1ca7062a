"""Forms of the staff panel: input checks only; every change goes through the apps' services."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from accounts.models import Tier
from accounts.services import SOCKET_ENDPOINTS
from notifications.models import Category, NotificationType
from system.models import ServiceStatus


class ComposeForm(forms.Form):
    audience = forms.ChoiceField(
        choices=[("user", "One user"), ("all", "Everyone"), *[(t.value, f"Every {t.label} account") for t in Tier]]
    )
    username = forms.CharField(required=False, max_length=150, help_text="Only for one user.")
    title = forms.CharField(max_length=200)
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)
    type = forms.ChoiceField(choices=NotificationType.choices, initial=NotificationType.INFO)
    category = forms.ChoiceField(choices=Category.choices, initial=Category.SYSTEM)

    def clean(self):
        data = super().clean()
        if data.get("audience") == "user":
            user = get_user_model().objects.filter(username=data.get("username") or "", is_active=True).first()
            if user is None:
                self.add_error("username", "No active user with this name.")
            data["user"] = user
        return data


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"


class MaintenanceForm(forms.Form):
    message = forms.CharField(max_length=500)
    start_time = forms.DateTimeField(label="Starts (UTC)", widget=DateTimeInput())
    end_time = forms.DateTimeField(label="Ends (UTC)", widget=DateTimeInput())

    def clean(self):
        data = super().clean()
        if data.get("start_time") and data.get("end_time") and data["end_time"] <= data["start_time"]:
            self.add_error("end_time", "The window must end after it starts.")
        return data


class ServiceStatusForm(forms.Form):
    service = forms.SlugField(max_length=64, help_text="e.g. order-routing, market-data")
    status = forms.ChoiceField(choices=ServiceStatus.choices)
    message = forms.CharField(max_length=500)
    estimated_recovery = forms.DateTimeField(label="Estimated recovery (UTC)", required=False, widget=DateTimeInput())


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=255, strip=True)


class DisconnectForm(forms.Form):
    endpoint = forms.ChoiceField(choices=[("all", "All"), *[(e, e) for e in SOCKET_ENDPOINTS]])

    def endpoints(self) -> list[str]:
        chosen = self.cleaned_data["endpoint"]
        return list(SOCKET_ENDPOINTS) if chosen == "all" else [chosen]
