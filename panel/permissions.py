"""Who may do what in the staff panel: the Django permissions the admin asks for the same thing.

Being staff opens the panel (the dashboard, like the admin's index); every page and action past
that asks the permission of the model it shows or changes, as the admin does (a view page: the
model's view or change permission; an action: the permission of the admin action doing the same).
A superuser has every permission. The table is docs/topics/operations.md's "The staff panel".
"""

from __future__ import annotations

from broadcast.rooms import STAFF_FEED_PERMISSIONS


def view_perms(model: str) -> tuple[str, ...]:
    """What lets the admin show a model (``ModelAdmin.has_view_permission``): view or change."""
    app, name = model.split(".")
    return (f"{app}.view_{name}", f"{app}.change_{name}")


# Abilities: each is granted by any one of its permissions.
ABILITIES: dict[str, tuple[str, ...]] = {
    # the event log's view or change permission: the page's live feed is admin:staff, which asks
    # the same of a socket (one tuple for both, so they cannot drift apart)
    "events": STAFF_FEED_PERMISSIONS,
    "orders": view_perms("orders.order"),
    "order_change": ("orders.change_order",),  # OrderAdmin's cancel/reject actions
    "notifications": view_perms("notifications.notification"),
    "compose": ("notifications.add_notification",),  # NotificationAdmin.compose
    "notices": view_perms("system.systemnotice"),
    "notice_add": ("system.add_systemnotice",),  # SystemNoticeAdmin's add form
    "notice_end": ("system.change_systemnotice",),  # SystemNoticeAdmin.end_notices
    "users": view_perms("accounts.user"),
    "money": view_perms("ledger.account"),
    "sessions": view_perms("orders.ordersession"),
    "session_revoke": ("orders.change_ordersession",),  # OrderSessionAdmin.revoke
    "disconnect": ("accounts.disconnect_user",),  # no admin counterpart: accounts/migrations/0002
    "instruments": view_perms("market.instrument"),
    "guard": view_perms("margin.marginguardexecution"),
}

# The panel's pages (and the navigation's links): open to whoever has any of these abilities.
PAGES: dict[str, tuple[str, ...]] = {
    "dashboard": (),  # every staff member: no model's rows, sections below as granted
    "events": ("events",),
    "orders": ("orders",),
    "notifications": ("notifications", "compose"),
    "system": ("notices", "notice_add"),
    "users": ("users",),
    "market": ("instruments", "guard"),
}


def may(user, ability: str) -> bool:
    return any(user.has_perm(p) for p in ABILITIES[ability])


def may_open(user, page: str) -> bool:
    needs = PAGES[page]
    return not needs or any(may(user, a) for a in needs)


def abilities(user) -> dict[str, bool]:
    """The signed-in staff member's abilities for a template (``can.orders``), and which pages
    they may open (``can.page_orders``: the navigation shows only those)."""
    can = {name: may(user, name) for name in ABILITIES}
    for page, needs in PAGES.items():
        can[f"page_{page}"] = not needs or any(can[a] for a in needs)
    return can
