/**
 * `useWebSocket`: seed 000's React hook over `EventsClient` — `{client, connectionState, error,
 * subscribe, unsubscribe, send, isConnected}` — with the client's reconnect and resume underneath.
 * React is a peer dependency of this entry only.
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { ConnectionState, EventsClient } from "./events.js";
export { ConnectionState };
/**
 * Open `/ws` for as long as the component is mounted (a new client when `url` or `token` change;
 * pass a stable token function, e.g. from `useCallback`, to refresh tokens without reconnecting).
 * `client` is set at once, so handlers can be added before the first event; rooms subscribed
 * through the hook are restored on every reconnect.
 */
export function useWebSocket(url, token, options = {}) {
    const [client, setClient] = useState(null);
    const [connectionState, setConnectionState] = useState(ConnectionState.DISCONNECTED);
    const [error, setError] = useState(null);
    // The options are read when the client is made; changing them later does not reconnect.
    const optionsRef = useRef(options);
    optionsRef.current = options;
    useEffect(() => {
        const wsClient = new EventsClient(url, token, optionsRef.current);
        const update = () => setConnectionState(wsClient.getConnectionState());
        wsClient.onConnectionStatus(update);
        wsClient.on("connection", () => setError(null));
        wsClient.on("error", (err) => setError(err));
        wsClient.on("noreconnect", (info) => {
            setConnectionState(ConnectionState.ERROR);
            setError(new Error(`not reconnecting: ${info.code ? `closed with ${info.code}` : info.reason}`));
        });
        setClient(wsClient);
        wsClient.connect().catch((err) => setError(err));
        update();
        return () => {
            wsClient.disconnect();
            setClient((current) => (current === wsClient ? null : current));
        };
    }, [url, token]);
    const subscribe = useCallback((channel) => client?.subscribe(channel), [client]);
    const unsubscribe = useCallback((channel) => client?.unsubscribe(channel), [client]);
    const send = useCallback((data) => void client?.send(data), [client]);
    return {
        client,
        connectionState,
        error,
        subscribe,
        unsubscribe,
        send,
        isConnected: connectionState === ConnectionState.AUTHENTICATED,
    };
}
