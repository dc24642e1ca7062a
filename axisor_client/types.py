"""What the REST API answers, as typed dictionaries (the server's JSON, keys as it spells them).
``docs/reference/rest.md`` describes each field. ``total=False``: a newer server may add keys, and
a few are present only sometimes."""

from __future__ import annotations

from typing import Any, Generic, TypedDict, TypeVar

T = TypeVar("T")


class Page(TypedDict, Generic[T], total=False):
    """A page of a list: ``count`` (offset pages only), ``next``, ``previous`` (URLs or ``None``), ``results``."""

    count: int
    next: str | None
    previous: str | None
    results: list[T]


class Order(TypedDict, total=False):
    orderId: str
    orderStatus: str  # PENDING, OPEN, TRIGGER PENDING, COMPLETE, CANCELLED, REJECTED
    tradingSymbol: str
    exchange: str
    orderType: str  # MARKET, LIMIT, SL, SL-M
    transactionType: str  # BUY, SELL
    quantity: float
    filledQuantity: float
    pendingQuantity: float
    price: float
    triggerPrice: float
    averagePrice: float
    rejectionReason: str | None
    leverage: int
    amo: bool
    reduceOnly: bool
    validity: str  # DAY, IOC, GTC
    clientOrderId: str | None
    version: int
    createdAt: str
    updatedAt: str


class OrderUpdate(TypedDict, total=False):
    """One update of an order, as ``/ws/orders`` sent it (``updateType`` ``ORDER_PLACED`` …)."""

    updateType: str
    orderId: str
    orderStatus: str
    tradingSymbol: str
    quantity: float
    filledQuantity: float
    pendingQuantity: float
    price: float
    averagePrice: float
    version: int
    timestamp: str
    tradeId: str
    execId: str
    tradeQuantity: float
    tradePrice: float
    tradeTime: str


class Trade(TypedDict, total=False):
    tradeId: str
    execId: str
    orderId: str
    tradingSymbol: str
    transactionType: str
    quantity: float
    price: float
    time: str
    liquidation: bool


class Position(TypedDict, total=False):
    id: str
    symbol: str
    side: str  # long, short
    quantity: float
    size: float
    entryPrice: float
    currentPrice: float
    margin: float
    leverage: float
    liquidationPrice: float
    pnl: float
    realizedPnl: float
    unrealizedPnl: float
    distanceToLiquidation: float
    isAtRisk: bool
    status: str
    openedAt: str
    closedAt: str | None
    closeReason: str | None
    updatedAt: str


class ClosePositionResult(TypedDict):
    position: Position
    order: Order


class CancelAllResult(TypedDict):
    cancelled: list[Order]
    failed: list[dict[str, str]]


class Account(TypedDict, total=False):
    """Amounts are strings with 8 decimals (``Decimal(account["available"])``)."""

    userId: str
    currency: str
    balance: str
    positionMargin: str
    orderMargin: str
    reserved: str
    available: str
    unrealizedPnl: str
    equity: str


class MarginGuard(TypedDict):
    enabled: bool
    threshold: float
    action: str  # notify, close_position
    cooldownSeconds: int


class Instrument(TypedDict, total=False):
    symbol: str
    exchange: str
    tickSize: float
    lotSize: float
    maxLeverage: int
    maintenanceMarginRate: float


class Quote(TypedDict, total=False):
    symbol: str
    price: float
    change: float
    changePercent: float
    volume: float
    high24h: float
    low24h: float
    timestamp: str


class Candle(TypedDict):
    time: str
    open: float
    high: float
    low: float
    close: float
    volume: float


class Candles(TypedDict):
    symbol: str
    timeframe: str
    candles: list[Candle]


class Notification(TypedDict, total=False):
    id: str
    title: str
    message: str
    type: str  # info, success, warning, error
    category: str
    data: dict[str, Any]
    read: bool
    readAt: str | None
    createdAt: str


class NotificationPage(TypedDict, total=False):
    next: str | None
    previous: str | None
    results: list[Notification]


class Event(TypedDict, total=False):
    """A personal event as ``/ws`` sends it: ``{"type","channel","data","seq"}``."""

    type: str
    channel: str
    data: dict[str, Any]
    seq: int


class EventsPage(TypedDict):
    events: list[Event]
    lastSeq: int
    hasMore: bool


class OrderSession(TypedDict):
    session: str
    token: str
    expiresAt: str
