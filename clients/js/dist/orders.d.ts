/**
 * `OrderUpdatesClient`: the `/ws/orders` order-updates protocol. Seed 004's worker `Socket` and its
 * main-thread `OrderUpdatesClient` in one (`connect(session, token)`, `on(event)`,
 * `onOrderUpdate(orderId|'*')`, `onAllOrders`, `onConnectionStatus`, `disconnect`), with resume by
 * `seq` (`&since=`), duplicate dropping and close-code-aware reconnect.
 */
import { Connection, type ConnectionOptions, type LifecycleEvents } from "./connection.js";
import type { HeartbeatMessage, OrdersResumedMessage, OrdersServerMessage, ResumeFailedMessage } from "./types.js";
/** What `POST /api/auth/sessions` answers (`expiresAt` is not needed here). */
export interface OrderCredentials {
    session: string;
    token: string;
}
/** Credentials, or a function asked for them on every (re)connect. */
export type CredentialsSource = OrderCredentials | (() => OrderCredentials | Promise<OrderCredentials>);
export interface OrderUpdatesClientOptions extends ConnectionOptions {
    /** Ask for each open order's latest update first (`?snapshot=1`; those carry `snapshot: true`). */
    snapshot?: boolean;
}
/** Event name → handler arguments: seed 004's events, plus the protocol's own messages. */
export type OrderUpdatesClientEvents = LifecycleEvents & {
    message: [message: OrdersServerMessage];
    heartbeat: [message: HeartbeatMessage];
    resumed: [message: OrdersResumedMessage];
    resume_failed: [message: ResumeFailedMessage];
};
export declare class OrderUpdatesClient extends Connection<OrderUpdatesClientEvents> {
    private readonly url;
    private credentials;
    private readonly snapshot;
    /**
     * The account's seq in the first heartbeat, while no update has come yet: a reconnect resumes
     * from there. Not used to drop duplicates (an update at or below it may still be on its way).
     */
    private fallback;
    /**
     * `url` is the socket (`wss://host/ws/orders`); `credentials` may also be given to `connect`, as
     * in the seed.
     */
    constructor(url: string, credentials?: CredentialsSource | null, options?: OrderUpdatesClientOptions);
    /** Seed 004's `connect(session, token)`; with no arguments, the constructor's credentials. */
    connect(session?: string, token?: string): Promise<void>;
    protected socketUrl(): Promise<string>;
    protected opened(): void;
    /** Seed 004's heartbeat: the text `PONG`. */
    protected heartbeat(): string;
    protected received(raw: Record<string, unknown>): void;
}
