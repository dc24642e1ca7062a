"""REST for system notices: staff or a service key create and end them; anyone signed in reads."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import staff_with

from .models import SystemNotice
from .selectors import notices_in_force
from .serializers import NoticeInput, NoticeOutput
from .services import system_notice_create, system_notice_end


class NoticeListApi(APIView):
    def get_permissions(self):
        return [staff_with("system.add_systemnotice")()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(responses=NoticeOutput(many=True), summary="System notices in force")
    def get(self, request):
        return Response(NoticeOutput(notices_in_force(), many=True).data)

    @extend_schema(
        request=NoticeInput,
        responses={201: NoticeOutput},
        summary="Create a system notice (staff with system.add_systemnotice, or the service key)",
    )
    def post(self, request):
        body = NoticeInput(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        notice = system_notice_create(
            kind=d["kind"],
            message=d["message"],
            start_time=d.get("startTime"),
            end_time=d.get("endTime"),
            service=d.get("service", ""),
            status=d.get("status", ""),
            estimated_recovery=d.get("estimatedRecovery"),
            actor=request.user if request.user.is_authenticated else None,
        )
        return Response(NoticeOutput(notice).data, status=status.HTTP_201_CREATED)


class NoticeEndApi(APIView):
    permission_classes = [staff_with("system.change_systemnotice")]

    @extend_schema(
        request=None,
        responses=NoticeOutput,
        summary="End a system notice now (staff with system.change_systemnotice, or the service key)",
    )
    def post(self, request, notice_id: int):
        notice = system_notice_end(notice=get_object_or_404(SystemNotice, pk=notice_id))
        return Response(NoticeOutput(notice).data)
