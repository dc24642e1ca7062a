/**
 * What both clients share: one socket at a time, reconnect by close code, heartbeat and read
 * timeout, the last `seq` (kept in a pluggable store) and duplicate dropping, and seed 004's
 * lifecycle events.
 */

import { reconnectDelay, type ReconnectPolicy } from "./backoff.js";
import { MemorySeqStore, type SeqStore } from "./store.js";
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

/** The URL without its query, which may hold credentials (`/ws/orders?session=…&token=…`). */
function withoutQuery(url: string): string {
  const query = url.indexOf("?");
  return query < 0 ? url : `${url.slice(0, query)}?…`;
}

type Handler = (...args: never[]) => void;

/** Runs each handler, so that one that throws never stops the stream or the other handlers. */
export function callAll<A extends unknown[]>(handlers: Iterable<(...args: A) => void> | undefined, args: A): void {
  if (!handlers) return;
  for (const handler of [...handlers]) {
    try {
      handler(...args);
    } catch (err) {
      console.error("@axisor/realtime: a handler threw", err);
    }
  }
}

/** Handlers by order id, `'*'` for every order (seed 004's `onOrderUpdate`). */
export class OrderHandlers {
  private readonly byOrder = new Map<string, Set<(update: OrderUpdate) => void>>();

  add(orderId: string, callback: (update: OrderUpdate) => void): () => void {
    let set = this.byOrder.get(orderId);
    if (!set) this.byOrder.set(orderId, (set = new Set()));
    set.add(callback);
    return () => this.remove(orderId, callback);
  }

  remove(orderId: string, callback: (update: OrderUpdate) => void): void {
    this.byOrder.get(orderId)?.delete(callback);
  }

  dispatch(update: OrderUpdate): void {
    callAll(this.byOrder.get(update.orderId), [update]);
    callAll(this.byOrder.get("*"), [update]);
  }
}

export abstract class Connection<Events extends LifecycleEvents> {
  protected ws: SocketLike | null = null;
  protected lastSeq: number | null = null;
  protected readonly policy: ReconnectPolicy;
  protected readonly store: SeqStore;
  protected readonly orderHandlers = new OrderHandlers();
  private readonly handlers = new Map<keyof Events, Set<Handler>>();
  private readonly statusHandlers = new Set<(status: ConnectionStatus) => void>();
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly heartbeatInterval: number;
  private readonly readTimeout: number;
  private storeLoaded = false;
  private attempts = 0;
  private stopped = true;
  private status: ConnectionStatus = "disconnected";
  private lastRead = 0;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private readTimer: ReturnType<typeof setInterval> | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private firstConnect: { resolve: () => void; reject: (e: Error) => void; promise: Promise<void> } | null = null;

  protected constructor(
    defaults: ReconnectPolicy,
    heartbeatDefault: number,
    options: ConnectionOptions,
  ) {
    this.policy = { ...defaults, ...options.reconnect };
    this.store = options.seqStore ?? new MemorySeqStore();
    this.heartbeatInterval = options.heartbeatInterval ?? heartbeatDefault;
    this.readTimeout = options.readTimeout ?? 30_000;
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!impl) {
      throw new Error(
        "no WebSocket here: pass options.WebSocket (e.g. the `ws` package), or on Node.js 20 run with --experimental-websocket (built in from Node.js 22)",
      );
    }
    this.WebSocketImpl = impl;
  }

  // ─── the public surface shared by both clients ─────────────────────────────────────────────────

  /** Add a handler (seed 000 and 004's `on`); returns a function that removes it. */
  on<K extends keyof Events & string>(event: K, handler: (...args: Events[K] & unknown[]) => void): () => void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler as Handler);
    return () => this.off(event, handler);
  }

  off<K extends keyof Events & string>(event: K, handler: (...args: Events[K] & unknown[]) => void): void {
    this.handlers.get(event)?.delete(handler as Handler);
  }

  /** Seed 004's `onOrderUpdate(orderId, cb)`; `'*'` for every order. Returns a remover. */
  onOrderUpdate(orderId: string, callback: (update: OrderUpdate) => void): () => void {
    return this.orderHandlers.add(orderId, callback);
  }

  offOrderUpdate(orderId: string, callback: (update: OrderUpdate) => void): void {
    this.orderHandlers.remove(orderId, callback);
  }

  /** Seed 004's `onAllOrders(cb)`: `onOrderUpdate('*', cb)`. */
  onAllOrders(callback: (update: OrderUpdate) => void): () => void {
    return this.onOrderUpdate("*", callback);
  }

  /** Seed 004's `onConnectionStatus(cb)`: connecting, connected, reconnecting, disconnected, noreconnect. */
  onConnectionStatus(callback: (status: ConnectionStatus) => void): () => void {
    this.statusHandlers.add(callback);
    return () => this.statusHandlers.delete(callback);
  }

  /** The last personal `seq` delivered (what the next connection resumes after), or `null`. */
  getLastSeq(): number | null {
    return this.lastSeq;
  }

  getStatus(): ConnectionStatus {
    return this.status;
  }

  /** Seed 004's `connected()`: the socket is open. */
  connected(): boolean {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /**
   * Open the socket; reconnects by itself from then on, until `disconnect()`. The promise resolves
   * on the first successful connection and rejects if the client gives up before one; a call while
   * the client is already running answers the same promise.
   */
  connect(): Promise<void> {
    if (!this.firstConnect || this.stopped) {
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      promise.catch(() => {}); // a caller that ignores the promise gets no unhandled rejection
      this.firstConnect = { resolve, reject, promise };
    }
    if (this.stopped) {
      this.stopped = false;
      this.attempts = 0;
      void this.open();
    }
    return this.firstConnect.promise;
  }

  /** Close for good: no reconnect (seed 000 and 004's `disconnect`). */
  disconnect(): void {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.stopTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState < 2) ws.close(1000, "client disconnect");
    this.setStatus("disconnected");
  }

  /** Drop the socket as a network failure would: the client reconnects and resumes. */
  drop(): void {
    this.ws?.close(3000, "dropped by client");
  }

  // ─── for the subclasses ────────────────────────────────────────────────────────────────────────

  /** The URL of the next socket (credentials, `since`). */
  protected abstract socketUrl(): Promise<string>;
  /** Called when the socket opened. */
  protected abstract opened(ws: SocketLike): void;
  /** Called with every parsed message. */
  protected abstract received(msg: Record<string, unknown>): void;
  /** The client's heartbeat message. */
  protected abstract heartbeat(): string;

  protected emit<K extends keyof Events & string>(event: K, ...args: Events[K] & unknown[]): void {
    this.fire(event, ...args);
  }

  /** `emit` for the lifecycle events, which every client's event map has. */
  protected fire(event: keyof LifecycleEvents | (keyof Events & string), ...args: unknown[]): void {
    callAll(this.handlers.get(event as keyof Events) as Set<(...a: unknown[]) => void> | undefined, args);
  }

  protected setStatus(status: ConnectionStatus): void {
    if (status === this.status) return;
    this.status = status;
    callAll(this.statusHandlers, [status]);
    this.fire("status", status);
  }

  /** The socket is ready for use: reset the attempts, resolve `connect()`. */
  protected ready(): void {
    this.attempts = 0;
    this.setStatus("connected");
    this.fire("connect");
    this.firstConnect?.resolve();
  }

  /** True (and the position moved on) for a `seq` not seen yet; false for a duplicate. */
  protected advance(seq: number): boolean {
    if (this.lastSeq !== null && seq <= this.lastSeq) return false;
    this.setLastSeq(seq);
    return true;
  }

  /** Move the position to `seq` (the server's `lastSeq` on a new connection, resume_failed, heartbeat). */
  protected setLastSeq(seq: number): void {
    this.lastSeq = seq;
    void Promise.resolve()
      .then(() => this.store.save(seq))
      .catch((err) => console.error("@axisor/realtime: the seq store failed to save", err));
  }

  protected sendRaw(text: string): boolean {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(text);
      return true;
    }
    return false;
  }

  protected socketError(code: SocketError["code"], message: string, cause?: unknown): void {
    this.fire("error", { type: "socket_error", code, message, cause });
  }

  /** Stop for good after a close the client must not retry (e.g. a static token that expired). */
  protected giveUp(info: NoReconnectInfo, detail?: string): void {
    this.stopped = true;
    this.stopTimers();
    this.setStatus("noreconnect");
    this.fire("noreconnect", info);
    const why = detail ?? (info.code ? `closed with ${info.code}` : `${info.reason} after ${info.attempts} attempts`);
    this.firstConnect?.reject(new Error(`@axisor/realtime: not reconnecting (${why})`));
  }

  /** Whether a close with this code is worth a reconnect; subclasses refine (e.g. 4002). */
  protected retryable(_code: number): boolean {
    return true;
  }

  // ─── the socket ────────────────────────────────────────────────────────────────────────────────

  private async open(): Promise<void> {
    if (this.stopped || (this.ws && this.ws.readyState < 2)) return;
    this.setStatus(this.attempts ? "reconnecting" : "connecting");
    if (!this.storeLoaded) {
      try {
        const stored = await this.store.load();
        if (this.lastSeq === null && typeof stored === "number") this.lastSeq = stored;
        this.storeLoaded = true;
      } catch (err) {
        console.error("@axisor/realtime: the seq store failed to load; starting from the server's current seq", err);
        this.storeLoaded = true;
      }
    }
    let url: string;
    try {
      url = await this.socketUrl();
    } catch (err) {
      this.socketError("TOKEN_UNAVAILABLE", "the token provider failed", err);
      this.closed(undefined);
      return;
    }
    if (this.stopped) return;
    let ws: SocketLike;
    try {
      ws = new this.WebSocketImpl(url);
    } catch (err) {
      // Not ws:// or wss://, a malformed host or port: the same URL will never work, so no retry.
      // The URL's query (credentials on /ws/orders) stays out of the message and of the cause.
      const shown = withoutQuery(url);
      const reason = (err instanceof Error ? err.message : String(err)).split(url).join(shown);
      const cause = shown === url ? err : Object.assign(new Error(reason), { name: (err as Error)?.name ?? "Error" });
      const message = `invalid WebSocket URL ${JSON.stringify(shown)} (expected ws://host/… or wss://host/…): ${reason}`;
      this.socketError("INVALID_URL", message, cause);
      this.giveUp({ reason: "invalid_url", attempts: this.attempts }, message);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastRead = Date.now();
      this.startTimers();
      this.opened(ws);
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (this.ws !== ws) return;
      this.lastRead = Date.now();
      if (typeof event.data !== "string") return; // both protocols are text only
      let msg: unknown;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg && typeof msg === "object" && !Array.isArray(msg)) this.received(msg as Record<string, unknown>);
    };
    ws.onerror = (event: unknown) => {
      if (this.ws !== ws) return;
      this.socketError("CONNECTION_ERROR", "the WebSocket failed", event);
    };
    ws.onclose = (event: { code: number; reason: string; wasClean: boolean }) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const info: CloseInfo = { code: event.code, reason: event.reason, wasClean: event.wasClean };
      this.fire("close", info);
      this.closed(info);
    };
  }

  private closed(info: CloseInfo | undefined): void {
    this.stopTimers();
    if (this.stopped) return;
    this.setStatus("disconnected");
    this.fire("disconnect", info);
    const code = info?.code;
    if (code !== undefined && !this.retryable(code)) {
      this.giveUp({ reason: "close_code", code, attempts: this.attempts });
      return;
    }
    const attempt = this.attempts + 1;
    const delay = reconnectDelay(this.policy, attempt, code);
    if (delay === null) {
      const reason = !this.policy.autoReconnect ? "disabled" : attempt > this.policy.maxAttempts ? "exhausted" : "close_code";
      this.giveUp({ reason, code, attempts: this.attempts });
      return;
    }
    this.attempts = attempt;
    this.setStatus("reconnecting");
    this.fire("reconnect", attempt, delay / 1000);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.open(), delay);
  }

  private startTimers(): void {
    this.stopTimers();
    if (this.heartbeatInterval > 0) {
      this.heartbeatTimer = setInterval(() => this.sendRaw(this.heartbeat()), this.heartbeatInterval);
    }
    if (this.readTimeout > 0) {
      // Checked a few times per timeout, so a silent server is noticed within 1.25 timeouts.
      this.readTimer = setInterval(
        () => {
          if (Date.now() - this.lastRead < this.readTimeout || !this.ws) return;
          // A dead network may never finish the close handshake: let this socket go at once.
          const ws = this.ws;
          this.ws = null;
          ws.close(3008, "read timeout");
          const info: CloseInfo = { code: 3008, reason: "read timeout", wasClean: false };
          this.fire("close", info);
          this.closed(info);
        },
        Math.max(50, this.readTimeout / 4),
      );
    }
  }

  private stopTimers(): void {
    clearInterval(this.heartbeatTimer);
    clearInterval(this.readTimer);
    this.heartbeatTimer = this.readTimer = undefined;
  }
}
