/**
 * @axisor/realtime — typed clients for the Axisor Realtime WebSocket protocols.
 *
 *   EventsClient        /ws         (seed 000: rooms, market data, margin guard, notifications, system)
 *   OrderUpdatesClient  /ws/orders  (seed 004: order and trade updates)
 *
 * The React hook is `@axisor/realtime/react`; the Web Worker entry is `@axisor/realtime/worker`.
 */
export { EventsClient, ConnectionState } from "./events.js";
export type { EventsClientOptions, EventsClientEvents, TokenSource } from "./events.js";
export { OrderUpdatesClient } from "./orders.js";
export type { OrderCredentials, CredentialsSource, OrderUpdatesClientOptions, OrderUpdatesClientEvents } from "./orders.js";
export type { ClientError, CloseInfo, ConnectionOptions, ConnectionStatus, LifecycleEvents, NoReconnectInfo, SocketError, SocketLike, WebSocketConstructor, } from "./connection.js";
export { EVENTS_RECONNECT, ORDERS_RECONNECT, FINAL_CLOSE_CODES, THROTTLED_CLOSE_CODES, reconnectDelay, } from "./backoff.js";
export type { ReconnectPolicy } from "./backoff.js";
export { MemorySeqStore, WebStorageSeqStore } from "./store.js";
export type { SeqStore } from "./store.js";
export * from "./types.js";
