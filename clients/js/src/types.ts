/**
 * The wire types of the two protocols: every message the server sends on `/ws` and `/ws/orders`
 * (docs/reference/events.md, ws.md, ws-orders.md) and every message a client sends.
 */

// ─── shared values ───────────────────────────────────────────────────────────────────────────────

/** An ISO 8601 time with a `Z`, e.g. `"2026-12-03T08:38:23.566Z"`. */
export type IsoTime = string;

export type UpdateType =
  | "ORDER_PLACED"
  | "ORDER_STATUS"
  | "ORDER_MODIFIED"
  | "ORDER_CANCELLED"
  | "ORDER_REJECTED"
  | "ORDER_EXECUTED"
  | "ORDER_PARTIAL"
  | "TRADE_UPDATE";

export type OrderStatus =
  | "PENDING"
  | "OPEN"
  | "COMPLETE"
  | "CANCELLED"
  | "REJECTED"
  | "TRIGGER_PENDING"
  | "AFTER_MARKET_ORDER_REQ_RECEIVED";

/** The flat order update: a `/ws/orders` frame, and the `data` of `order_update` on `/ws`. */
export interface OrderUpdate {
  updateType: UpdateType;
  orderId: string;
  orderStatus: OrderStatus;
  tradingSymbol: string;
  exchange: string;
  orderType: "MARKET" | "LIMIT" | "SL" | "SL-M" | string;
  transactionType: "BUY" | "SELL";
  quantity: number;
  filledQuantity: number;
  pendingQuantity: number;
  price: number;
  triggerPrice: number;
  averagePrice: number;
  rejectionReason: string;
  leverage: number;
  amo: boolean;
  reduceOnly: boolean;
  validity: "DAY" | "IOC" | "GTC";
  clientOrderId: string | null;
  version: number;
  timestamp: IsoTime;
  /** On `/ws/orders` only (see `OrderUpdateFrame`); on `/ws` the `seq` is on the envelope. */
  seq?: number;
  /** On `/ws/orders` only, with `?snapshot=1`: an open order's latest update, before the live stream. */
  snapshot?: true;
  // TRADE_UPDATE only
  tradeId?: string;
  execId?: string;
  tradeQuantity?: number;
  tradePrice?: number;
  tradeTime?: IsoTime;
  /** Present (and true) only on the fill of a liquidation. */
  liquidation?: true;
}

/** A `/ws/orders` frame: the flat order update with the user's `seq`. */
export interface OrderUpdateFrame extends OrderUpdate {
  seq: number;
}

// ─── event payloads (`data`) ─────────────────────────────────────────────────────────────────────

export interface MarketData {
  symbol: string;
  price: number;
  change: number;
  changePercent: number;
  volume: number;
  high24h: number;
  low24h: number;
  timestamp: IsoTime;
}

export type Timeframe = "1m" | "5m" | "15m" | "1h" | "4h" | "1d";

export interface Candle {
  time: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
}

export interface HistoricalData {
  symbol: string;
  timeframe: Timeframe;
  candles: Candle[];
  timestamp: IsoTime;
}

export interface PriceAlert {
  id: string;
  symbol: string;
  condition: "above" | "below" | "crosses";
  price: number;
  currentPrice: number;
  triggeredAt: IsoTime;
  note: string;
}

export interface GuardPosition {
  id: string;
  symbol: string;
  distanceToLiquidation: number;
  isAtRisk: boolean;
  recommendedAction: string;
  guardFired: boolean;
}

export interface MarginGuardExecution {
  executionId: string;
  userId: string;
  action: "notification_sent" | "close_position";
  positions: GuardPosition[];
  summary: { positionsChecked: number; positionsAtRisk: number; actionsExecuted: string[] };
  threshold: number;
  trigger: "threshold" | "cooldown";
  executedAt: IsoTime;
}

export interface AutoCloseExecution {
  executionId: string;
  userId: string;
  guardExecutionId: string;
  position: {
    id: string;
    symbol: string;
    closedAt: IsoTime;
    reason: "margin_guard_auto_close";
    pnl: number;
    orderId: string;
  };
  executedAt: IsoTime;
}

export interface Position {
  id: string;
  symbol: string;
  side: "long" | "short";
  quantity: number;
  size: number;
  entryPrice: number;
  currentPrice: number;
  margin: number;
  leverage: number;
  liquidationPrice: number | null;
  pnl: number;
  unrealizedPnl: number;
  realizedPnl: number;
  distanceToLiquidation: number | null;
  isAtRisk: boolean;
  status: string;
  openedAt: IsoTime;
  closedAt: IsoTime | null;
  closeReason: string | null;
  updatedAt: IsoTime;
}

export interface PositionStatus {
  userId: string;
  position: Position;
}

export interface InAppNotification {
  id: string;
  userId: string;
  title: string;
  message: string;
  type: "info" | "success" | "warning" | "error";
  category: "margin_guard" | "orders" | "price_alert" | "system" | "account";
  data: Record<string, unknown>;
  read: boolean;
  readAt: IsoTime | null;
  createdAt: IsoTime;
}

export interface NotificationStatus {
  id: string;
  status: "sent" | "delivered" | "failed" | "read";
  deliveredAt?: IsoTime | null;
  deliveryMethod: "in_app" | "email" | "webhook";
  attempts?: number;
  error?: string;
  readAt?: IsoTime;
}

export interface ServerMaintenance {
  id: string;
  scheduled: boolean;
  startTime: IsoTime;
  endTime: IsoTime | null;
  message: string;
  status: "scheduled" | "in_progress" | "ended";
}

export interface ServiceStatus {
  id: string;
  service: string;
  status: "operational" | "degraded" | "down";
  message: string;
  estimatedRecovery: IsoTime | null;
  updatedAt: IsoTime;
}

export interface AdminEvents {
  time: IsoTime;
  counts: Record<string, number>;
  total: number;
  events: Array<{ type: string; channel: string; room: string; userId: string | null; seq: number | null } & Record<string, unknown>>;
  relayed?: true;
}

export interface AdminStats {
  process: string;
  startedAt: IsoTime;
  time: IsoTime;
  interval: number;
  connections: { "/ws": number; "/ws/orders": number };
  rooms: { user: number; system: number; admin: number; market: number };
  marketRooms: Record<string, number>;
  slowCloses: number;
  fanout: { market_data: number; historical_data: number };
}

// ─── the `/ws` envelope ──────────────────────────────────────────────────────────────────────────

/** A domain event: `seq` only on personal events (logged, replayable). */
export interface Envelope<T extends string, C extends string, D> {
  type: T;
  channel: C;
  data: D;
  seq?: number;
}

export type OrderUpdateEvent = Envelope<"order_update", "orders", OrderUpdate> & { seq: number };
export type PriceAlertEvent = Envelope<"price_alert", "alerts", PriceAlert> & { seq: number };
export type MarginGuardExecutionEvent = Envelope<"margin_guard_execution", "margin_guard", MarginGuardExecution> & {
  seq: number;
};
export type AutoCloseExecutionEvent = Envelope<"auto_close_execution", "margin_guard", AutoCloseExecution> & { seq: number };
export type InAppNotificationEvent = Envelope<"in_app_notification", "notifications", InAppNotification> & { seq: number };
export type NotificationStatusUpdateEvent = Envelope<"notification_status_update", "notifications", NotificationStatus> & {
  seq: number;
};
export type MarketDataUpdateEvent = Envelope<"market_data_update", "market_data", MarketData>;
export type HistoricalDataUpdateEvent = Envelope<"historical_data_update", "historical_data", HistoricalData>;
export type PositionStatusUpdateEvent = Envelope<"position_status_update", "positions", PositionStatus>;
export type ServerMaintenanceEvent = Envelope<"server_maintenance", "system", ServerMaintenance>;
export type ServiceStatusUpdateEvent = Envelope<"service_status_update", "system", ServiceStatus>;
export type AdminEventsEvent = Envelope<"admin_events", "admin", AdminEvents>;
export type AdminStatsEvent = Envelope<"admin_stats", "admin", AdminStats>;

// ─── protocol messages ───────────────────────────────────────────────────────────────────────────

export type ErrorCode =
  | "AUTHENTICATION_FAILED"
  | "TOKEN_EXPIRED"
  | "ACCESS_REVOKED"
  | "DISCONNECTED"
  | "RATE_LIMIT_EXCEEDED"
  | "SLOW_CONSUMER"
  | "SERVICE_UNAVAILABLE"
  | "INVALID_MESSAGE"
  | "INVALID_ROOM"
  | "FORBIDDEN"
  | "MESSAGE_TOO_LARGE";

export interface ConnectionMessage {
  type: "connection";
  status: "connected";
  userId: string;
  sessionId: string;
  serverTime: IsoTime;
  tokenExpiresAt: IsoTime;
  lastSeq: number;
}

export interface ErrorMessage {
  type: "error";
  code: ErrorCode;
  message: string;
  channel?: string;
  closeCode?: number;
}

export interface AuthExpiringMessage {
  type: "auth_expiring";
  expiresAt: IsoTime;
}

export interface RoomSubscriptionMessage {
  type: "room_subscription";
  channel: string;
  status: "subscribed" | "unsubscribed";
  subscribedRooms: string[];
}

export interface RoomListMessage {
  type: "room_list";
  subscribedRooms: string[];
}

export interface PongMessage {
  type: "pong";
  serverTime: IsoTime;
}

/** `/ws`: after a replay. */
export interface ResumedMessage {
  type: "resumed";
  since: number;
  lastSeq: number;
  replayed: number;
}

/** `/ws/orders`: after the replay asked for with `?since=`. */
export interface OrdersResumedMessage {
  type: "resumed";
  since: number;
  lastSeq: number;
}

export interface ResumeFailedMessage {
  type: "resume_failed";
  reason: "too_old" | "ahead" | "rate_limited";
  snapshotRequired: boolean;
  lastSeq: number;
  oldestSeq: number | null;
  code?: "RATE_LIMIT_EXCEEDED";
  retryAfter?: number;
  message?: string;
}

export interface HeartbeatMessage {
  type: "heartbeat";
  serverTime: IsoTime;
  lastSeq: number;
}

/** Sent by tests and benchmarks only: a personal event of no domain meaning. */
export type TestEvent = Envelope<"test_event", "notifications", Record<string, unknown>> & { seq: number };

/** Every message the server sends on `/ws`. */
export type EventsServerMessage =
  | ConnectionMessage
  | ErrorMessage
  | AuthExpiringMessage
  | RoomSubscriptionMessage
  | RoomListMessage
  | PongMessage
  | ResumedMessage
  | ResumeFailedMessage
  | OrderUpdateEvent
  | PriceAlertEvent
  | MarginGuardExecutionEvent
  | AutoCloseExecutionEvent
  | InAppNotificationEvent
  | NotificationStatusUpdateEvent
  | MarketDataUpdateEvent
  | HistoricalDataUpdateEvent
  | PositionStatusUpdateEvent
  | ServerMaintenanceEvent
  | ServiceStatusUpdateEvent
  | AdminEventsEvent
  | AdminStatsEvent
  | TestEvent;

/** Every message the server sends on `/ws/orders`: flat order updates and a few typed messages. */
export type OrdersServerMessage = OrderUpdateFrame | HeartbeatMessage | OrdersResumedMessage | ResumeFailedMessage | ErrorMessage;

/** `type` → message, for the typed `on()` of the `/ws` client. */
export type EventsMessageMap = { [M in EventsServerMessage as M["type"]]: M };

/** Every message a client sends on `/ws`. */
export type EventsClientMessage =
  | { type: "auth"; token: string; since?: number }
  | { type: "subscribe"; channel: string }
  | { type: "unsubscribe"; channel: string }
  | { type: "list_rooms" }
  | { type: "resume"; since: number }
  | { type: "ping" };

/** The rooms and categories of `subscribe`/`unsubscribe`. */
export type Category = "notifications" | "positions" | "margin_guard" | "alerts" | "orders";
export type Room = `user:${string}` | `market:${string}` | `admin:${string}` | "system";

// ─── close codes (docs/reference/close-codes.md) ─────────────────────────────────────────────────

export const CloseCode = {
  INVALID_PAYLOAD: 1007,
  MESSAGE_TOO_BIG: 1009,
  AUTHENTICATION_FAILED: 4001,
  TOKEN_EXPIRED: 4002,
  ACCESS_REVOKED: 4003,
  DISCONNECTED_BY_STAFF: 4004,
  FLOODING: 4008,
  SLOW_CONSUMER: 4009,
  TRY_AGAIN_LATER: 4013,
  TOO_MANY_CONNECTIONS: 4029,
  TOO_MANY_ATTEMPTS: 4030,
  IDLE: 4040,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
