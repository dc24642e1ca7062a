/**
 * `EventsClient`: the `/ws` events protocol. Seed 000's `AxisorWebSocketClient` (same constructor,
 * `connect()`, `on`/`off`, `subscribe`/`unsubscribe`, `send`, `disconnect`,
 * `getConnectionState()`), plus resume by `seq`, duplicate dropping, close-code-aware reconnect,
 * heartbeat and read timeout, and a fresh token when the server sends `auth_expiring`.
 */
import { Connection, type ConnectionOptions, type LifecycleEvents, type SocketLike } from "./connection.js";
import type { EventsClientMessage, EventsMessageMap } from "./types.js";
/** Seed 000's connection states. */
export declare const ConnectionState: {
    readonly CONNECTING: "connecting";
    readonly CONNECTED: "connected";
    readonly AUTHENTICATED: "authenticated";
    readonly DISCONNECTED: "disconnected";
    readonly ERROR: "error";
};
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
/** Event name → handler arguments: every server message `type`, plus seed 004's lifecycle events. */
export type EventsClientEvents = {
    [K in Exclude<keyof EventsMessageMap, "error">]: [message: EventsMessageMap[K]];
} & LifecycleEvents & {
    message: [message: EventsMessageMap[keyof EventsMessageMap]];
};
export declare class EventsClient extends Connection<EventsClientEvents> {
    private readonly url;
    private readonly rooms;
    private readonly muted;
    private readonly getToken;
    private readonly refresh;
    private state;
    private authenticated;
    constructor(url: string, token: TokenSource, options?: EventsClientOptions);
    /** Seed 000's `getConnectionState()`. */
    getConnectionState(): ConnectionState;
    /**
     * Join a room (`market:BTC_USD`) or turn a category of your personal stream back on
     * (`notifications`, `positions`, `margin_guard`, `alerts`, `orders`). Kept across reconnects.
     */
    subscribe(channel: string): void;
    /** Leave a room, or turn a category off on this client. Kept across reconnects. */
    unsubscribe(channel: string): void;
    /** Send a client message (seed 000's `send`); dropped unless authenticated. Returns whether it went. */
    send(message: EventsClientMessage | Record<string, unknown>): boolean;
    /** The rooms and categories this client restores on every connection. */
    subscriptions(): {
        rooms: string[];
        mutedCategories: string[];
    };
    protected socketUrl(): Promise<string>;
    private pendingToken;
    protected opened(ws: SocketLike): void;
    protected heartbeat(): string;
    /** 4002 (token expired): worth a reconnect only when a fresh token can be had. */
    protected retryable(code: number): boolean;
    protected received(raw: Record<string, unknown>): void;
    private refreshToken;
    private sendIfReady;
}
