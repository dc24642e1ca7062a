/**
 * What both clients share: one socket at a time, reconnect by close code, heartbeat and read
 * timeout, the last `seq` (kept in a pluggable store) and duplicate dropping, and seed 004's
 * lifecycle events.
 */
import { reconnectDelay } from "./backoff.js";
import { MemorySeqStore } from "./store.js";
/** The URL without its query, which may hold credentials (`/ws/orders?session=…&token=…`). */
function withoutQuery(url) {
    const query = url.indexOf("?");
    return query < 0 ? url : `${url.slice(0, query)}?…`;
}
/** Runs each handler, so that one that throws never stops the stream or the other handlers. */
export function callAll(handlers, args) {
    if (!handlers)
        return;
    for (const handler of [...handlers]) {
        try {
            handler(...args);
        }
        catch (err) {
            console.error("@axisor/realtime: a handler threw", err);
        }
    }
}
/** Handlers by order id, `'*'` for every order (seed 004's `onOrderUpdate`). */
export class OrderHandlers {
    byOrder = new Map();
    add(orderId, callback) {
        let set = this.byOrder.get(orderId);
        if (!set)
            this.byOrder.set(orderId, (set = new Set()));
        set.add(callback);
        return () => this.remove(orderId, callback);
    }
    remove(orderId, callback) {
        this.byOrder.get(orderId)?.delete(callback);
    }
    dispatch(update) {
        callAll(this.byOrder.get(update.orderId), [update]);
        callAll(this.byOrder.get("*"), [update]);
    }
}
export class Connection {
    ws = null;
    lastSeq = null;
    policy;
    store;
    orderHandlers = new OrderHandlers();
    handlers = new Map();
    statusHandlers = new Set();
    WebSocketImpl;
    heartbeatInterval;
    readTimeout;
    storeLoaded = false;
    attempts = 0;
    stopped = true;
    status = "disconnected";
    lastRead = 0;
    heartbeatTimer;
    readTimer;
    reconnectTimer;
    firstConnect = null;
    constructor(defaults, heartbeatDefault, options) {
        this.policy = { ...defaults, ...options.reconnect };
        this.store = options.seqStore ?? new MemorySeqStore();
        this.heartbeatInterval = options.heartbeatInterval ?? heartbeatDefault;
        this.readTimeout = options.readTimeout ?? 30_000;
        const impl = options.WebSocket ?? globalThis.WebSocket;
        if (!impl) {
            throw new Error("no WebSocket here: pass options.WebSocket (e.g. the `ws` package), or on Node.js 20 run with --experimental-websocket (built in from Node.js 22)");
        }
        this.WebSocketImpl = impl;
    }
    // ─── the public surface shared by both clients ─────────────────────────────────────────────────
    /** Add a handler (seed 000 and 004's `on`); returns a function that removes it. */
    on(event, handler) {
        let set = this.handlers.get(event);
        if (!set)
            this.handlers.set(event, (set = new Set()));
        set.add(handler);
        return () => this.off(event, handler);
    }
    off(event, handler) {
        this.handlers.get(event)?.delete(handler);
    }
    /** Seed 004's `onOrderUpdate(orderId, cb)`; `'*'` for every order. Returns a remover. */
    onOrderUpdate(orderId, callback) {
        return this.orderHandlers.add(orderId, callback);
    }
    offOrderUpdate(orderId, callback) {
        this.orderHandlers.remove(orderId, callback);
    }
    /** Seed 004's `onAllOrders(cb)`: `onOrderUpdate('*', cb)`. */
    onAllOrders(callback) {
        return this.onOrderUpdate("*", callback);
    }
    /** Seed 004's `onConnectionStatus(cb)`: connecting, connected, reconnecting, disconnected, noreconnect. */
    onConnectionStatus(callback) {
        this.statusHandlers.add(callback);
        return () => this.statusHandlers.delete(callback);
    }
    /** The last personal `seq` delivered (what the next connection resumes after), or `null`. */
    getLastSeq() {
        return this.lastSeq;
    }
    getStatus() {
        return this.status;
    }
    /** Seed 004's `connected()`: the socket is open. */
    connected() {
        return this.ws !== null && this.ws.readyState === 1;
    }
    /**
     * Open the socket; reconnects by itself from then on, until `disconnect()`. The promise resolves
     * on the first successful connection and rejects if the client gives up before one; a call while
     * the client is already running answers the same promise.
     */
    connect() {
        if (!this.firstConnect || this.stopped) {
            let resolve;
            let reject;
            const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
            promise.catch(() => { }); // a caller that ignores the promise gets no unhandled rejection
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
    disconnect() {
        this.stopped = true;
        clearTimeout(this.reconnectTimer);
        this.stopTimers();
        const ws = this.ws;
        this.ws = null;
        if (ws && ws.readyState < 2)
            ws.close(1000, "client disconnect");
        this.setStatus("disconnected");
    }
    /** Drop the socket as a network failure would: the client reconnects and resumes. */
    drop() {
        this.ws?.close(3000, "dropped by client");
    }
    emit(event, ...args) {
        this.fire(event, ...args);
    }
    /** `emit` for the lifecycle events, which every client's event map has. */
    fire(event, ...args) {
        callAll(this.handlers.get(event), args);
    }
    setStatus(status) {
        if (status === this.status)
            return;
        this.status = status;
        callAll(this.statusHandlers, [status]);
        this.fire("status", status);
    }
    /** The socket is ready for use: reset the attempts, resolve `connect()`. */
    ready() {
        this.attempts = 0;
        this.setStatus("connected");
        this.fire("connect");
        this.firstConnect?.resolve();
    }
    /** True (and the position moved on) for a `seq` not seen yet; false for a duplicate. */
    advance(seq) {
        if (this.lastSeq !== null && seq <= this.lastSeq)
            return false;
        this.setLastSeq(seq);
        return true;
    }
    /** Move the position to `seq` (the server's `lastSeq` on a new connection, resume_failed, heartbeat). */
    setLastSeq(seq) {
        this.lastSeq = seq;
        void Promise.resolve()
            .then(() => this.store.save(seq))
            .catch((err) => console.error("@axisor/realtime: the seq store failed to save", err));
    }
    sendRaw(text) {
        if (this.ws && this.ws.readyState === 1) {
            this.ws.send(text);
            return true;
        }
        return false;
    }
    socketError(code, message, cause) {
        this.fire("error", { type: "socket_error", code, message, cause });
    }
    /** Stop for good after a close the client must not retry (e.g. a static token that expired). */
    giveUp(info, detail) {
        this.stopped = true;
        this.stopTimers();
        this.setStatus("noreconnect");
        this.fire("noreconnect", info);
        const why = detail ?? (info.code ? `closed with ${info.code}` : `${info.reason} after ${info.attempts} attempts`);
        this.firstConnect?.reject(new Error(`@axisor/realtime: not reconnecting (${why})`));
    }
    /** Whether a close with this code is worth a reconnect; subclasses refine (e.g. 4002). */
    retryable(_code) {
        return true;
    }
    // ─── the socket ────────────────────────────────────────────────────────────────────────────────
    async open() {
        if (this.stopped || (this.ws && this.ws.readyState < 2))
            return;
        this.setStatus(this.attempts ? "reconnecting" : "connecting");
        if (!this.storeLoaded) {
            try {
                const stored = await this.store.load();
                if (this.lastSeq === null && typeof stored === "number")
                    this.lastSeq = stored;
                this.storeLoaded = true;
            }
            catch (err) {
                console.error("@axisor/realtime: the seq store failed to load; starting from the server's current seq", err);
                this.storeLoaded = true;
            }
        }
        let url;
        try {
            url = await this.socketUrl();
        }
        catch (err) {
            this.socketError("TOKEN_UNAVAILABLE", "the token provider failed", err);
            this.closed(undefined);
            return;
        }
        if (this.stopped)
            return;
        let ws;
        try {
            ws = new this.WebSocketImpl(url);
        }
        catch (err) {
            // Not ws:// or wss://, a malformed host or port: the same URL will never work, so no retry.
            // The URL's query (credentials on /ws/orders) stays out of the message and of the cause.
            const shown = withoutQuery(url);
            const reason = (err instanceof Error ? err.message : String(err)).split(url).join(shown);
            const cause = shown === url ? err : Object.assign(new Error(reason), { name: err?.name ?? "Error" });
            const message = `invalid WebSocket URL ${JSON.stringify(shown)} (expected ws://host/… or wss://host/…): ${reason}`;
            this.socketError("INVALID_URL", message, cause);
            this.giveUp({ reason: "invalid_url", attempts: this.attempts }, message);
            return;
        }
        this.ws = ws;
        ws.onopen = () => {
            if (this.ws !== ws)
                return;
            this.lastRead = Date.now();
            this.startTimers();
            this.opened(ws);
        };
        ws.onmessage = (event) => {
            if (this.ws !== ws)
                return;
            this.lastRead = Date.now();
            if (typeof event.data !== "string")
                return; // both protocols are text only
            let msg;
            try {
                msg = JSON.parse(event.data);
            }
            catch {
                return;
            }
            if (msg && typeof msg === "object" && !Array.isArray(msg))
                this.received(msg);
        };
        ws.onerror = (event) => {
            if (this.ws !== ws)
                return;
            this.socketError("CONNECTION_ERROR", "the WebSocket failed", event);
        };
        ws.onclose = (event) => {
            if (this.ws !== ws)
                return;
            this.ws = null;
            const info = { code: event.code, reason: event.reason, wasClean: event.wasClean };
            this.fire("close", info);
            this.closed(info);
        };
    }
    closed(info) {
        this.stopTimers();
        if (this.stopped)
            return;
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
    startTimers() {
        this.stopTimers();
        if (this.heartbeatInterval > 0) {
            this.heartbeatTimer = setInterval(() => this.sendRaw(this.heartbeat()), this.heartbeatInterval);
        }
        if (this.readTimeout > 0) {
            // Checked a few times per timeout, so a silent server is noticed within 1.25 timeouts.
            this.readTimer = setInterval(() => {
                if (Date.now() - this.lastRead < this.readTimeout || !this.ws)
                    return;
                // A dead network may never finish the close handshake: let this socket go at once.
                const ws = this.ws;
                this.ws = null;
                ws.close(3008, "read timeout");
                const info = { code: 3008, reason: "read timeout", wasClean: false };
                this.fire("close", info);
                this.closed(info);
            }, Math.max(50, this.readTimeout / 4));
        }
    }
    stopTimers() {
        clearInterval(this.heartbeatTimer);
        clearInterval(this.readTimer);
        this.heartbeatTimer = this.readTimer = undefined;
    }
}
