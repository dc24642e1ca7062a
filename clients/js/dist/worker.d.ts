/**
 * The Web Worker entry: seed 004's `order-updates-worker.js` protocol over `OrderUpdatesClient`.
 *
 *   const worker = new Worker(new URL("@axisor/realtime/worker", import.meta.url), { type: "module" });
 *   worker.postMessage(JSON.stringify({ msgType: "connect", session, token }));
 *   worker.onmessage = (e) => { const data = JSON.parse(e.data); data.status ? ... : data.updateType ? ... };
 *
 * In: `{msgType: "connect", session, token, url?, since?}` (`url` defaults to `/ws/orders` on the
 * worker's own host) and `{msgType: "disconnect"}`. Out (JSON strings, as in the seed):
 * `{status: "connected"}`, `{status: "connecting"}` on a close, an error or a reconnect attempt,
 * `{status: "noreconnect", code?}` when it gives up, and every order update as received.
 */
/** A message the page posts to the worker (as a JSON string, as in the seed, or as an object). */
export type WorkerRequest = {
    msgType: "connect";
    session: string;
    token: string;
    url?: string;
    since?: number;
} | {
    msgType: "disconnect";
};
/** A message the worker posts to the page (as a JSON string). */
export type WorkerStatus = {
    status: "connected" | "connecting" | "noreconnect";
    code?: number;
};
