"""Sign-in forms for staff (the panel's and the admin's): a user who is not staff is refused exactly
like a wrong password, in message and in the failure count (django-axes), so neither tells an
attacker that the password was right."""

from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError


def refused_sign_in(form: AuthenticationForm) -> ValidationError:
    """The password was right but the account may not sign in here: count it as a failed sign-in
    and answer the form's wrong-password error."""
    user_login_failed.send(
        sender=__name__, credentials={"username": form.cleaned_data.get("username")}, request=form.request
    )
    return form.get_invalid_login_error()


class StaffLoginForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Wrong username or password, or not a staff account.",
    }

    def confirm_login_allowed(self, user) -> None:
        if not user.is_active or not user.is_staff:
            raise refused_sign_in(self)


class StaffAdminLoginForm(AdminAuthenticationForm):
    def confirm_login_allowed(self, user) -> None:
        if not user.is_active or not user.is_staff:
            raise refused_sign_in(self)
