"""Positions, guard settings and executions in the Django admin; staff actions go through the
services."""

from decimal import Decimal as D

import pytest
from django.test import Client

from margin.models import MarginGuardConfig, MarginGuardExecution, Position
from tests.margin.conftest import tick

pytestmark = pytest.mark.django_db


def test_admin_lists_positions_and_executions_and_closes_through_the_service(make_user, trade):
    root, user = make_user("root", superuser=True), make_user("trader")
    trade(user, "BUY", "1", "100", leverage=10)
    tick("BTC_USD", 98)
    position, execution = Position.objects.get(user=user), MarginGuardExecution.objects.get(user=user)
    client = Client()
    client.force_login(root)
    for url in (
        "/admin/margin/position/",
        f"/admin/margin/position/{position.pk}/change/",
        "/admin/margin/marginguardexecution/",
        f"/admin/margin/marginguardexecution/{execution.pk}/change/",
        "/admin/margin/marginguardconfig/",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
    assert execution.execution_id.encode() in client.get("/admin/margin/marginguardexecution/").content
    resp = client.post("/admin/margin/position/", {"action": "close_positions", "_selected_action": [position.pk]})
    assert resp.status_code == 302
    position.refresh_from_db()
    assert position.close_kind == "manual" and position.close_order.transaction_type == "SELL"


def test_admin_guard_settings_go_through_the_service(make_user, trade):
    root, user = make_user("root", superuser=True), make_user("trader")
    trade(user, "BUY", "1", "100", leverage=10)
    client = Client()
    client.force_login(root)
    resp = client.post(
        "/admin/margin/marginguardconfig/add/",
        {"user": user.pk, "enabled": "on", "threshold": "0.5", "action": "close_position", "cooldown_seconds": "30"},
    )
    assert resp.status_code == 302, resp.content[:2000]
    config = MarginGuardConfig.objects.get(user=user)
    assert (config.threshold, config.action, config.cooldown_seconds) == (D("0.5"), "close_position", 30)
    assert Position.objects.get(user=user).guard_price == D("95.25")  # re-indexed by the service
