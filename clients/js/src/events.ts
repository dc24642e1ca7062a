/**
 * `EventsClient`: the `/ws` events protocol. Seed 000's `AxisorWebSocketClient` (same constructor,
 * `connect()`, `on`/`off`, `subscribe`/`unsubscribe`, `send`, `disconnect`,
 * `getConnectionState()`), plus resume by `seq`, duplicate dropping, close-code-aware reconnect,
 * heartbeat and read timeout, and a fresh token when the server sends `auth_expiring`.
 */

import { EVENTS_RECONNECT } from "./backoff.js";
import { Connection, type ConnectionOptions, type LifecycleEvents, type SocketLike } from "./connection.js";
import type { AuthExpiringMessage, Category, EventsClientMessage, EventsMessageMap, OrderUpdate } from "./types.js";

/** Seed 000's connection states. */
export const ConnectionState = {
  CONNECTING: "connecting",
  CONNECTED: "connected",
  AUTHENTICATED: "authenticated",
  DISCONNECTED: "disconnected",
  ERROR: "error",
} as const;
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

/** A JWT, or a function asked for one on every (re)connect. */
export type TokenSource = string | (() => string | Promise<string>);

export interface EventsClientOptions extends ConnectionOptions {
  /** Seed 000's option: attempts before `noreconnect` (default 5). */
  maxReconnectAttempts?: number;
  /** Seed 000's option: the first reconnect delay in ms, doubled on each attempt (default 1000). */
  reconnectDelay?: number;
  /**
   * Asked for a fresh token when the server sends `auth_expiring`; the socket stays open with it.
   * Default: the token function given to the constructor (a fixed string cannot be refreshed).
   */
  onTokenRefresh?: (expiresAt: string) => string | Promise<string>;
  /** Rooms to join on every connection (more with `subscribe`). */
  rooms?: string[];
}

const CATEGORIES: ReadonlySet<string> = new Set<Category>(["notifications", "positions", "margin_guard", "alerts", "orders"]);

/** Event name → handler arguments: every server message `type`, plus seed 004's lifecycle events. */
export type EventsClientEvents = { [K in Exclude<keyof EventsMessageMap, "error">]: [message: EventsMessageMap[K]] } &
  LifecycleEvents & { message: [message: EventsMessageMap[keyof EventsMessageMap]] };

export class EventsClient extends Connection<EventsClientEvents> {
  private readonly rooms: Set<string>;
  private readonly muted = new Set<string>();
  private readonly getToken: () => Promise<string>;
  private readonly refresh: ((expiresAt: string) => string | Promise<string>) | null;
  private state: ConnectionState = ConnectionState.DISCONNECTED;
  private authenticated = false;

  constructor(
    private readonly url: string,
    token: TokenSource,
    options: EventsClientOptions = {},
  ) {
    super(
      {
        ...EVENTS_RECONNECT,
        ...(options.maxReconnectAttempts !== undefined && { maxAttempts: options.maxReconnectAttempts }),
        ...(options.reconnectDelay !== undefined && { baseDelay: options.reconnectDelay }),
      },
      10_000,
      options,
    );
    this.getToken = typeof token === "function" ? async () => token() : async () => token;
    this.refresh = options.onTokenRefresh ?? (typeof token === "function" ? () => token() : null);
    this.rooms = new Set(options.rooms ?? []);
    this.onConnectionStatus((status) => {
      if (status === "connected") this.state = ConnectionState.AUTHENTICATED;
      else if (status === "connecting" || status === "reconnecting") this.state = ConnectionState.CONNECTING;
      else this.state = ConnectionState.DISCONNECTED;
    });
  }

  /** Seed 000's `getConnectionState()`. */
  getConnectionState(): ConnectionState {
    return this.state;
  }

  /**
   * Join a room (`market:BTC_USD`) or turn a category of your personal stream back on
   * (`notifications`, `positions`, `margin_guard`, `alerts`, `orders`). Kept across reconnects.
   */
  subscribe(channel: string): void {
    if (CATEGORIES.has(channel)) this.muted.delete(channel);
    else this.rooms.add(channel);
    this.sendIfReady({ type: "subscribe", channel });
  }

  /** Leave a room, or turn a category off on this client. Kept across reconnects. */
  unsubscribe(channel: string): void {
    if (CATEGORIES.has(channel)) this.muted.add(channel);
    else this.rooms.delete(channel);
    this.sendIfReady({ type: "unsubscribe", channel });
  }

  /** Send a client message (seed 000's `send`); dropped unless authenticated. Returns whether it went. */
  send(message: EventsClientMessage | Record<string, unknown>): boolean {
    return this.sendIfReady(message);
  }

  /** The rooms and categories this client restores on every connection. */
  subscriptions(): { rooms: string[]; mutedCategories: string[] } {
    return { rooms: [...this.rooms], mutedCategories: [...this.muted] };
  }

  // ─── the protocol ──────────────────────────────────────────────────────────────────────────────

  protected async socketUrl(): Promise<string> {
    this.pendingToken = await this.getToken();
    return this.url;
  }

  private pendingToken = "";

  protected opened(ws: SocketLike): void {
    this.state = ConnectionState.CONNECTED;
    this.authenticated = false;
    // Resuming in the auth message is atomic: the missed events come before any live one.
    const auth: EventsClientMessage =
      this.lastSeq === null
        ? { type: "auth", token: this.pendingToken }
        : { type: "auth", token: this.pendingToken, since: this.lastSeq };
    ws.send(JSON.stringify(auth));
  }

  protected heartbeat(): string {
    return JSON.stringify({ type: "ping" });
  }

  /** 4002 (token expired): worth a reconnect only when a fresh token can be had. */
  protected override retryable(code: number): boolean {
    return code !== 4002 || this.refresh !== null;
  }

  protected received(raw: Record<string, unknown>): void {
    const msg = raw as unknown as EventsMessageMap[keyof EventsMessageMap];
    switch (msg.type) {
      case "connection":
        if (this.lastSeq === null) this.setLastSeq(msg.lastSeq);
        break;
      case "resume_failed":
        this.setLastSeq(msg.lastSeq); // continue live; the app re-fetches its state over REST
        break;
      case "auth_expiring":
        void this.refreshToken(msg);
        break;
    }
    if ("seq" in msg && typeof msg.seq === "number" && !this.advance(msg.seq)) return; // a duplicate
    this.fire("message", msg);
    if (msg.type === "error") this.fire("error", msg);
    else this.fire(msg.type, msg);
    if (msg.type === "order_update") {
      const update: OrderUpdate = msg.data;
      this.fire("orderUpdate", update);
      this.orderHandlers.dispatch(update);
    }
    if (msg.type === "connection" && !this.authenticated) {
      this.authenticated = true; // a `connection` after a token refresh is not a new connection
      for (const room of this.rooms) this.sendRaw(JSON.stringify({ type: "subscribe", channel: room }));
      for (const category of this.muted) this.sendRaw(JSON.stringify({ type: "unsubscribe", channel: category }));
      this.ready();
    }
  }

  private async refreshToken(msg: AuthExpiringMessage): Promise<void> {
    if (!this.refresh) return;
    const ws = this.ws;
    try {
      const token = await this.refresh(msg.expiresAt);
      if (this.ws === ws) this.sendRaw(JSON.stringify({ type: "auth", token }));
    } catch (err) {
      this.socketError("TOKEN_UNAVAILABLE", "the token refresh callback failed", err);
    }
  }

  private sendIfReady(message: object): boolean {
    return this.authenticated && this.sendRaw(JSON.stringify(message));
  }
}
