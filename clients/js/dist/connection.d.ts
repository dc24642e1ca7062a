/**
 * What both clients share: one socket at a time, reconnect by close code, heartbeat and read
 * timeout, the last `seq` (kept in a pluggable store) and duplicate dropping, and seed 004's
 * lifecycle events.
 */
import { type ReconnectPolicy } from "./backoff.js";
import { type SeqStore } from "./store.js";
import type { ErrorMessage, OrderUpdate } from "./types.js";
/** The connection states reported to `onConnectionStatus` (and the `status` event). */
export type ConnectionStatus = "connecting" | "connected" | "reconnecting" | "disconnected" | "noreconnect";
/** The close of a socket, as the `close` and `disconnect` events report it. */
export interface CloseInfo {
    code: number;
    reason: string;
    wasClean: boolean;
}
/** Why the client stopped reconnecting (the `noreconnect` event). */
export interface NoReconnectInfo {
    /**
     * `close_code`: the server's close code says reconnecting cannot help; `exhausted`: out of attempts;
     * `disabled`: `autoReconnect` is off; `invalid_url`: the WebSocket constructor refused the URL.
     */
    reason: "close_code" | "exhausted" | "disabled" | "invalid_url";
    code?: number;
    attempts: number;
}
/** A failure of the socket itself (the `error` event also carries the server's error messages). */
export interface SocketError {
    type: "socket_error";
    /** `INVALID_URL`: the WebSocket constructor threw (not `ws://` or `wss://`, a bad host or port…). */
    code: "CONNECTION_ERROR" | "TOKEN_UNAVAILABLE" | "INVALID_URL";
    message: string;
    cause?: unknown;
}
/** The payload of the `error` event: a server error message (with its `code`) or a socket failure. */
export type ClientError = ErrorMessage | SocketError;
/** Seed 004's connection events, shared by both clients: event name → handler arguments. */
export interface LifecycleEvents {
    connect: [];
    disconnect: [info: CloseInfo | undefined];
    reconnect: [attempt: number, delaySeconds: number];
    noreconnect: [info: NoReconnectInfo];
    error: [error: ClientError];
    close: [info: CloseInfo];
    status: [status: ConnectionStatus];
    orderUpdate: [update: OrderUpdate];
}
export interface ConnectionOptions {
    /** Reconnect schedule; unset fields keep the socket's seed defaults. */
    reconnect?: Partial<ReconnectPolicy>;
    /** Where the last delivered `seq` is kept (default: in memory, for the life of the client). */
    seqStore?: SeqStore;
    /** Milliseconds between the client's heartbeats (0: none). */
    heartbeatInterval?: number;
    /** Reconnect after this many ms without any message from the server (0: never). Seed 004: 30 s. */
    readTimeout?: number;
    /** A WebSocket constructor, for runtimes without a global one (e.g. the `ws` package). */
    WebSocket?: WebSocketConstructor;
}
/**
 * What the clients use of a socket. The DOM `WebSocket` (browsers, Node.js 22+) and the `ws`
 * package's class both have it; their events' types differ, so the handlers' argument is left open
 * here (the clients read only `data`, `code`, `reason` and `wasClean`).
 */
export interface SocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((event: never) => void) | null;
    onmessage: ((event: never) => void) | null;
    onerror: ((event: never) => void) | null;
    onclose: ((event: never) => void) | null;
}
/** A WebSocket class: the global `WebSocket`, or the `ws` package's (`import WebSocket from "ws"`). */
export type WebSocketConstructor = new (url: string) => SocketLike;
/** Runs each handler, so that one that throws never stops the stream or the other handlers. */
export declare function callAll<A extends unknown[]>(handlers: Iterable<(...args: A) => void> | undefined, args: A): void;
/** Handlers by order id, `'*'` for every order (seed 004's `onOrderUpdate`). */
export declare class OrderHandlers {
    private readonly byOrder;
    add(orderId: string, callback: (update: OrderUpdate) => void): () => void;
    remove(orderId: string, callback: (update: OrderUpdate) => void): void;
    dispatch(update: OrderUpdate): void;
}
export declare abstract class Connection<Events extends LifecycleEvents> {
    protected ws: SocketLike | null;
    protected lastSeq: number | null;
    protected readonly policy: ReconnectPolicy;
    protected readonly store: SeqStore;
    protected readonly orderHandlers: OrderHandlers;
    private readonly handlers;
    private readonly statusHandlers;
    private readonly WebSocketImpl;
    private readonly heartbeatInterval;
    private readonly readTimeout;
    private storeLoaded;
    private attempts;
    private stopped;
    private status;
    private lastRead;
    private heartbeatTimer;
    private readTimer;
    private reconnectTimer;
    private firstConnect;
    protected constructor(defaults: ReconnectPolicy, heartbeatDefault: number, options: ConnectionOptions);
    /** Add a handler (seed 000 and 004's `on`); returns a function that removes it. */
    on<K extends keyof Events & string>(event: K, handler: (...args: Events[K] & unknown[]) => void): () => void;
    off<K extends keyof Events & string>(event: K, handler: (...args: Events[K] & unknown[]) => void): void;
    /** Seed 004's `onOrderUpdate(orderId, cb)`; `'*'` for every order. Returns a remover. */
    onOrderUpdate(orderId: string, callback: (update: OrderUpdate) => void): () => void;
    offOrderUpdate(orderId: string, callback: (update: OrderUpdate) => void): void;
    /** Seed 004's `onAllOrders(cb)`: `onOrderUpdate('*', cb)`. */
    onAllOrders(callback: (update: OrderUpdate) => void): () => void;
    /** Seed 004's `onConnectionStatus(cb)`: connecting, connected, reconnecting, disconnected, noreconnect. */
    onConnectionStatus(callback: (status: ConnectionStatus) => void): () => void;
    /** The last personal `seq` delivered (what the next connection resumes after), or `null`. */
    getLastSeq(): number | null;
    getStatus(): ConnectionStatus;
    /** Seed 004's `connected()`: the socket is open. */
    connected(): boolean;
    /**
     * Open the socket; reconnects by itself from then on, until `disconnect()`. The promise resolves
     * on the first successful connection and rejects if the client gives up before one; a call while
     * the client is already running answers the same promise.
     */
    connect(): Promise<void>;
    /** Close for good: no reconnect (seed 000 and 004's `disconnect`). */
    disconnect(): void;
    /** Drop the socket as a network failure would: the client reconnects and resumes. */
    drop(): void;
    /** The URL of the next socket (credentials, `since`). */
    protected abstract socketUrl(): Promise<string>;
    /** Called when the socket opened. */
    protected abstract opened(ws: SocketLike): void;
    /** Called with every parsed message. */
    protected abstract received(msg: Record<string, unknown>): void;
    /** The client's heartbeat message. */
    protected abstract heartbeat(): string;
    protected emit<K extends keyof Events & string>(event: K, ...args: Events[K] & unknown[]): void;
    /** `emit` for the lifecycle events, which every client's event map has. */
    protected fire(event: keyof LifecycleEvents | (keyof Events & string), ...args: unknown[]): void;
    protected setStatus(status: ConnectionStatus): void;
    /** The socket is ready for use: reset the attempts, resolve `connect()`. */
    protected ready(): void;
    /** True (and the position moved on) for a `seq` not seen yet; false for a duplicate. */
    protected advance(seq: number): boolean;
    /** Move the position to `seq` (the server's `lastSeq` on a new connection, resume_failed, heartbeat). */
    protected setLastSeq(seq: number): void;
    protected sendRaw(text: string): boolean;
    protected socketError(code: SocketError["code"], message: string, cause?: unknown): void;
    /** Stop for good after a close the client must not retry (e.g. a static token that expired). */
    protected giveUp(info: NoReconnectInfo, detail?: string): void;
    /** Whether a close with this code is worth a reconnect; subclasses refine (e.g. 4002). */
    protected retryable(_code: number): boolean;
    private open;
    private closed;
    private startTimers;
    private stopTimers;
}
