/**
 * `OrderUpdatesClient`: the `/ws/orders` order-updates protocol. Seed 004's worker `Socket` and its
 * main-thread `OrderUpdatesClient` in one (`connect(session, token)`, `on(event)`,
 * `onOrderUpdate(orderId|'*')`, `onAllOrders`, `onConnectionStatus`, `disconnect`), with resume by
 * `seq` (`&since=`), duplicate dropping and close-code-aware reconnect.
 */
import { ORDERS_RECONNECT } from "./backoff.js";
import { Connection } from "./connection.js";
export class OrderUpdatesClient extends Connection {
    url;
    credentials;
    snapshot;
    /**
     * The account's seq in the first heartbeat, while no update has come yet: a reconnect resumes
     * from there. Not used to drop duplicates (an update at or below it may still be on its way).
     */
    fallback = null;
    /**
     * `url` is the socket (`wss://host/ws/orders`); `credentials` may also be given to `connect`, as
     * in the seed.
     */
    constructor(url, credentials = null, options = {}) {
        super(ORDERS_RECONNECT, 30_000, options);
        this.url = url;
        this.credentials = credentials;
        this.snapshot = options.snapshot ?? false;
    }
    /** Seed 004's `connect(session, token)`; with no arguments, the constructor's credentials. */
    connect(session, token) {
        if (session !== undefined && token !== undefined)
            this.credentials = { session, token };
        if (!this.credentials)
            return Promise.reject(new Error("OrderUpdatesClient.connect needs a session and a token"));
        return super.connect();
    }
    async socketUrl() {
        const source = this.credentials;
        const { session, token } = typeof source === "function" ? await source() : source;
        const query = new URLSearchParams({ session, token });
        const since = this.lastSeq ?? this.fallback;
        if (since !== null)
            query.set("since", String(since));
        if (this.snapshot)
            query.set("snapshot", "1");
        return `${this.url}${this.url.includes("?") ? "&" : "?"}${query}`;
    }
    opened() {
        this.ready();
    }
    /** Seed 004's heartbeat: the text `PONG`. */
    heartbeat() {
        return "PONG";
    }
    received(raw) {
        const msg = raw;
        if ("updateType" in msg) {
            // Snapshot frames repeat an order's latest update: shown, but they do not move the position.
            if (!msg.snapshot && typeof msg.seq === "number" && !this.advance(msg.seq))
                return;
            this.fire("message", msg);
            this.fire("orderUpdate", msg);
            this.orderHandlers.dispatch(msg);
            return;
        }
        if (msg.type === "heartbeat" && this.lastSeq === null && this.fallback === null)
            this.fallback = msg.lastSeq;
        if (msg.type === "resume_failed")
            this.setLastSeq(msg.lastSeq); // continue live; re-fetch over REST
        this.fire("message", msg);
        this.fire(msg.type, msg);
    }
}
