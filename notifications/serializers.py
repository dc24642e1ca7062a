from rest_framework import serializers

from accounts.models import Tier
from core.api import json_problem

from .events import notification_data
from .models import Category, DeliveryStatus, Method, NotificationType


class NotificationOutput(serializers.Serializer):
    id = serializers.CharField()
    userId = serializers.CharField()
    title = serializers.CharField()
    message = serializers.CharField()
    type = serializers.ChoiceField(choices=NotificationType.values)
    category = serializers.ChoiceField(choices=Category.values)
    # DRF's metaclass moves declared fields off the class, so Serializer.data stays a property.
    data = serializers.DictField()  # type: ignore[assignment]
    read = serializers.BooleanField()
    readAt = serializers.DateTimeField(allow_null=True)
    createdAt = serializers.DateTimeField()
    deliveries = serializers.ListField(child=serializers.DictField())

    def to_representation(self, n) -> dict:
        return {
            **notification_data(n),
            "deliveries": [
                {"method": d.method, "status": d.status, "attempts": d.attempts, "lastError": d.last_error}
                for d in n.deliveries.all()
            ],
        }


class NotificationFilterInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["read", "unread"], required=False)
    category = serializers.ChoiceField(choices=Category.values, required=False)


class NotificationCreateInput(serializers.Serializer):
    userId = serializers.IntegerField(required=False, min_value=1)
    audience = serializers.ChoiceField(choices=["all", *Tier.values], required=False)
    title = serializers.CharField(max_length=200)
    message = serializers.CharField(max_length=2000)
    type = serializers.ChoiceField(choices=NotificationType.values, default=NotificationType.INFO)
    category = serializers.ChoiceField(choices=Category.values)
    # DRF's metaclass moves declared fields off the class, so Serializer.data stays a property.
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]

    def validate_data(self, value):
        problem = json_problem(value, max_bytes=16 * 1024)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs):
        if ("userId" in attrs) == ("audience" in attrs):
            raise serializers.ValidationError({"audience": "give exactly one of userId or audience"})
        return attrs


class MethodSwitches(serializers.Serializer):
    in_app = serializers.BooleanField(required=False)
    email = serializers.BooleanField(required=False)
    webhook = serializers.BooleanField(required=False)


class PreferencesInput(serializers.Serializer):
    categories = serializers.DictField(child=MethodSwitches(), required=False, default=dict)
    webhookUrl = serializers.URLField(required=False, allow_null=True, max_length=500)
    webhookSecret = serializers.CharField(required=False, min_length=16, max_length=128)

    def validate_categories(self, value):
        unknown = set(value) - set(Category.values)
        if unknown:
            raise serializers.ValidationError(f"unknown categories: {', '.join(sorted(unknown))}")
        return value

    def validate(self, attrs):
        if attrs.get("webhookUrl") and not attrs.get("webhookSecret"):
            raise serializers.ValidationError({"webhookSecret": "required with webhookUrl (16+ characters)"})
        if "webhookSecret" in attrs and not attrs.get("webhookUrl"):
            # A secret is saved with its URL; alone it was ignored, and the caller thought it rotated.
            raise serializers.ValidationError(
                {"webhookSecret": "only with webhookUrl: send the URL with its new secret"}
            )
        return attrs


class PreferencesOutput(serializers.Serializer):
    categories = serializers.DictField(child=serializers.DictField(child=serializers.BooleanField()))
    webhookUrl = serializers.URLField(allow_null=True)


DELIVERY_STATUSES = DeliveryStatus.values
METHODS = Method.values
