/**
 * `EventsClient`: the `/ws` events protocol. Seed 000's `AxisorWebSocketClient` (same constructor,
 * `connect()`, `on`/`off`, `subscribe`/`unsubscribe`, `send`, `disconnect`,
 * `getConnectionState()`), plus resume by `seq`, duplicate dropping, close-code-aware reconnect,
 * heartbeat and read timeout, and a fresh token when the server sends `auth_expiring`.
 */
import { EVENTS_RECONNECT } from "./backoff.js";
import { Connection } from "./connection.js";
/** Seed 000's connection states. */
export const ConnectionState = {
    CONNECTING: "connecting",
    CONNECTED: "connected",
    AUTHENTICATED: "authenticated",
    DISCONNECTED: "disconnected",
    ERROR: "error",
};
const CATEGORIES = new Set(["notifications", "positions", "margin_guard", "alerts", "orders"]);
export class EventsClient extends Connection {
    url;
    rooms;
    muted = new Set();
    getToken;
    refresh;
    state = ConnectionState.DISCONNECTED;
    authenticated = false;
    constructor(url, token, options = {}) {
        super({
            ...EVENTS_RECONNECT,
            ...(options.maxReconnectAttempts !== undefined && { maxAttempts: options.maxReconnectAttempts }),
            ...(options.reconnectDelay !== undefined && { baseDelay: options.reconnectDelay }),
        }, 10_000, options);
        this.url = url;
        this.getToken = typeof token === "function" ? async () => token() : async () => token;
        this.refresh = options.onTokenRefresh ?? (typeof token === "function" ? () => token() : null);
        this.rooms = new Set(options.rooms ?? []);
        this.onConnectionStatus((status) => {
            if (status === "connected")
                this.state = ConnectionState.AUTHENTICATED;
            else if (status === "connecting" || status === "reconnecting")
                this.state = ConnectionState.CONNECTING;
            else
                this.state = ConnectionState.DISCONNECTED;
        });
    }
    /** Seed 000's `getConnectionState()`. */
    getConnectionState() {
        return this.state;
    }
    /**
     * Join a room (`market:BTC_USD`) or turn a category of your personal stream back on
     * (`notifications`, `positions`, `margin_guard`, `alerts`, `orders`). Kept across reconnects.
     */
    subscribe(channel) {
        if (CATEGORIES.has(channel))
            this.muted.delete(channel);
        else
            this.rooms.add(channel);
        this.sendIfReady({ type: "subscribe", channel });
    }
    /** Leave a room, or turn a category off on this client. Kept across reconnects. */
    unsubscribe(channel) {
        if (CATEGORIES.has(channel))
            this.muted.add(channel);
        else
            this.rooms.delete(channel);
        this.sendIfReady({ type: "unsubscribe", channel });
    }
    /** Send a client message (seed 000's `send`); dropped unless authenticated. Returns whether it went. */
    send(message) {
        return this.sendIfReady(message);
    }
    /** The rooms and categories this client restores on every connection. */
    subscriptions() {
        return { rooms: [...this.rooms], mutedCategories: [...this.muted] };
    }
    // ─── the protocol ──────────────────────────────────────────────────────────────────────────────
    async socketUrl() {
        this.pendingToken = await this.getToken();
        return this.url;
    }
    pendingToken = "";
    opened(ws) {
        this.state = ConnectionState.CONNECTED;
        this.authenticated = false;
        // Resuming in the auth message is atomic: the missed events come before any live one.
        const auth = this.lastSeq === null
            ? { type: "auth", token: this.pendingToken }
            : { type: "auth", token: this.pendingToken, since: this.lastSeq };
        ws.send(JSON.stringify(auth));
    }
    heartbeat() {
        return JSON.stringify({ type: "ping" });
    }
    /** 4002 (token expired): worth a reconnect only when a fresh token can be had. */
    retryable(code) {
        return code !== 4002 || this.refresh !== null;
    }
    received(raw) {
        const msg = raw;
        switch (msg.type) {
            case "connection":
                if (this.lastSeq === null)
                    this.setLastSeq(msg.lastSeq);
                break;
            case "resume_failed":
                this.setLastSeq(msg.lastSeq); // continue live; the app re-fetches its state over REST
                break;
            case "auth_expiring":
                void this.refreshToken(msg);
                break;
        }
        if ("seq" in msg && typeof msg.seq === "number" && !this.advance(msg.seq))
            return; // a duplicate
        this.fire("message", msg);
        if (msg.type === "error")
            this.fire("error", msg);
        else
            this.fire(msg.type, msg);
        if (msg.type === "order_update") {
            const update = msg.data;
            this.fire("orderUpdate", update);
            this.orderHandlers.dispatch(update);
        }
        if (msg.type === "connection" && !this.authenticated) {
            this.authenticated = true; // a `connection` after a token refresh is not a new connection
            for (const room of this.rooms)
                this.sendRaw(JSON.stringify({ type: "subscribe", channel: room }));
            for (const category of this.muted)
                this.sendRaw(JSON.stringify({ type: "unsubscribe", channel: category }));
            this.ready();
        }
    }
    async refreshToken(msg) {
        if (!this.refresh)
            return;
        const ws = this.ws;
        try {
            const token = await this.refresh(msg.expiresAt);
            if (this.ws === ws)
                this.sendRaw(JSON.stringify({ type: "auth", token }));
        }
        catch (err) {
            this.socketError("TOKEN_UNAVAILABLE", "the token refresh callback failed", err);
        }
    }
    sendIfReady(message) {
        return this.authenticated && this.sendRaw(JSON.stringify(message));
    }
}
