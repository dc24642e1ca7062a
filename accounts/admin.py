from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import transaction

from .forms import StaffAdminLoginForm
from .models import User
from .signals import account_access_changed

# A non-staff user with the right password is refused like a wrong password (accounts/forms.py).
admin.site.login_form = StaffAdminLoginForm


admin.site.unregister(Group)


@admin.register(Group)
class GuardedGroupAdmin(GroupAdmin):
    """A group's permissions are grants: a superuser's to set (with auth.change_group, a staff
    member could have added any permission to a group of their own: the second review)."""

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(User)
class AccountAdmin(UserAdmin):
    list_display = ("username", "tier", "is_staff", "is_superuser", "is_active", "date_joined")
    list_filter = ("tier", "is_staff", "is_superuser", "is_active")
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Account", {"fields": ("tier",)}))
    add_fieldsets = (*UserAdmin.add_fieldsets, ("Account", {"fields": ("tier",)}))

    # Who may grant what (an outside review: a staff member with only change_user ticked
    # is_superuser on their own account, and could have reset a superuser's password; the review
    # of that fix: or another staff member's, and used their permissions): the flags and grants
    # that raise an account's powers are a superuser's to set, and a staff account other than
    # one's own is a superuser's to change.
    GRANTS = ("is_superuser", "is_staff", "groups", "user_permissions")

    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly if request.user.is_superuser else (*readonly, *self.GRANTS)

    def _guarded(self, request, obj) -> bool:
        return (
            obj is not None
            and (obj.is_staff or obj.is_superuser)
            and obj.pk != request.user.pk
            and not request.user.is_superuser
        )

    def has_change_permission(self, request, obj=None):
        return not self._guarded(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not self._guarded(request, obj) and super().has_delete_permission(request, obj)

    # A deleted account's open sockets close (4003) like a deactivated one's: told on commit, they
    # re-check and find no account. Sent before the delete (it clears the objects' pk), in the
    # delete's transaction, so no socket re-checks before the account is gone.
    def delete_model(self, request, obj):
        with transaction.atomic():
            account_access_changed.send(sender=User, user=obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for user in queryset:
                account_access_changed.send(sender=User, user=user)
            super().delete_queryset(request, queryset)
