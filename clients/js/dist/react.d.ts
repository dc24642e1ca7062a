/**
 * `useWebSocket`: seed 000's React hook over `EventsClient` — `{client, connectionState, error,
 * subscribe, unsubscribe, send, isConnected}` — with the client's reconnect and resume underneath.
 * React is a peer dependency of this entry only.
 */
import type { ClientError } from "./connection.js";
import { ConnectionState, EventsClient, type EventsClientOptions, type TokenSource } from "./events.js";
import type { EventsClientMessage } from "./types.js";
export { ConnectionState };
/** What `useWebSocket` returns (seed 000's shape). */
export interface UseWebSocketResult {
    client: EventsClient | null;
    connectionState: ConnectionState;
    error: ClientError | Error | null;
    subscribe: (channel: string) => void;
    unsubscribe: (channel: string) => void;
    send: (data: EventsClientMessage | Record<string, unknown>) => void;
    isConnected: boolean;
}
/**
 * Open `/ws` for as long as the component is mounted (a new client when `url` or `token` change;
 * pass a stable token function, e.g. from `useCallback`, to refresh tokens without reconnecting).
 * `client` is set at once, so handlers can be added before the first event; rooms subscribed
 * through the hook are restored on every reconnect.
 */
export declare function useWebSocket(url: string, token: TokenSource, options?: EventsClientOptions): UseWebSocketResult;
