"""REST for credentials: the token pair, its refresh (single-use: each answers a new refresh token)
and logout. Throttled per address and per username or user (accounts/throttles.py)."""

from __future__ import annotations

from typing import cast

from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenViewBase

from .models import User
from .throttles import LOGIN_THROTTLES, REFRESH_THROTTLES
from .tokens import RefreshToken, credentials_current


class TokenObtainInput(TokenObtainPairSerializer):
    """simplejwt's sign-in, its pair carrying the credentials claim (accounts/tokens.py)."""

    token_class = RefreshToken


class TokenRefreshInput(TokenRefreshSerializer):
    """simplejwt's refresh, stricter: the token's user must still exist, be active and have the
    credentials the token was issued under (accounts/tokens.py), and a token is spent by its first
    refresh, also when two refreshes race."""

    def validate(self, attrs):
        refresh = RefreshToken(attrs["refresh"])  # signature, expiry, type, blacklist
        user = User.objects.filter(**{jwt_settings.USER_ID_FIELD: refresh.get(jwt_settings.USER_ID_CLAIM)}).first()
        if user is None or not jwt_settings.USER_AUTHENTICATION_RULE(user):
            raise exceptions.AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account")
        if not credentials_current(refresh, user):
            raise exceptions.AuthenticationFailed("The user's password has been changed.", "password_changed")
        with transaction.atomic():
            # blacklist() answers get_or_create's (row, created), whatever its annotation says
            _, spent_now = cast(tuple[BlacklistedToken, bool], refresh.blacklist())
            if not spent_now:  # another refresh spent it a moment ago
                raise TokenError("Token is blacklisted")
            renewed = RefreshToken.for_user(user)
        return {"access": str(renewed.access_token), "refresh": str(renewed)}


class TokenObtainApi(TokenObtainPairView):
    serializer_class = TokenObtainInput
    throttle_classes = LOGIN_THROTTLES

    @extend_schema(summary="A token pair (access, refresh) for a username and password")
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class TokenRefreshApi(TokenViewBase):
    serializer_class = TokenRefreshInput
    throttle_classes = REFRESH_THROTTLES

    @extend_schema(
        summary="A new token pair for a refresh token; the refresh token given is spent",
        responses={
            200: inline_serializer("TokenPair", {"access": serializers.CharField(), "refresh": serializers.CharField()})
        },
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class LogoutInput(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutApi(TokenViewBase):
    """Revoke a refresh token (the access tokens it issued expire on their own, within
    JWT_ACCESS_SECONDS)."""

    serializer_class = LogoutInput
    throttle_classes = REFRESH_THROTTLES

    @extend_schema(request=LogoutInput, responses={204: None}, summary="Log out: revoke a refresh token")
    def post(self, request, *args, **kwargs):
        data = LogoutInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            RefreshToken(data.validated_data["refresh"]).blacklist()
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
