from django.contrib import admin, messages

from .models import SystemNotice
from .selectors import notices_in_force
from .services import system_notice_end, system_notice_save


@admin.register(SystemNotice)
class SystemNoticeAdmin(admin.ModelAdmin):
    list_display = ("__str__", "kind", "service", "status", "start_time", "end_time", "ended_at", "in_force")
    list_filter = ("kind", "status", "service")
    readonly_fields = ("created_by", "created_at", "updated_at", "ended_at")
    actions = ["end_notices"]

    @admin.display(boolean=True, description="In force")
    def in_force(self, obj):
        return notices_in_force().filter(pk=obj.pk).exists()

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        system_notice_save(notice=obj)  # broadcasts like the API does

    @admin.action(description="End the selected notices now", permissions=["change"])
    def end_notices(self, request, queryset):
        for notice in queryset:
            system_notice_end(notice=notice)
        self.message_user(request, f"Ended {queryset.count()} notice(s).", messages.SUCCESS)
