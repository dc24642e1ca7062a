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

import { MemorySeqStore } from "./store.js";
import { OrderUpdatesClient } from "./orders.js";

/** A message the page posts to the worker (as a JSON string, as in the seed, or as an object). */
export type WorkerRequest =
  | { msgType: "connect"; session: string; token: string; url?: string; since?: number }
  | { msgType: "disconnect" };

/** A message the worker posts to the page (as a JSON string). */
export type WorkerStatus = { status: "connected" | "connecting" | "noreconnect"; code?: number };

interface WorkerScope {
  onmessage: ((event: MessageEvent) => void) | null;
  postMessage(message: string): void;
  location: { protocol: string; host: string };
}

const scope = globalThis as unknown as WorkerScope;
let socket: OrderUpdatesClient | null = null;

function post(message: object): void {
  scope.postMessage(JSON.stringify(message));
}

function defaultUrl(): string {
  return `${scope.location.protocol === "https:" ? "wss" : "ws"}://${scope.location.host}/ws/orders`;
}

scope.onmessage = (event: MessageEvent) => {
  let request: WorkerRequest;
  try {
    request = typeof event.data === "string" ? JSON.parse(event.data) : event.data;
  } catch {
    return;
  }
  if (request.msgType === "disconnect") {
    socket?.disconnect();
    socket = null;
    return;
  }
  if (request.msgType !== "connect" || !request.token) return;
  socket?.disconnect(); // a second connect replaces the first, as the seed's worker does
  const client = new OrderUpdatesClient(request.url ?? defaultUrl(), null, {
    seqStore: new MemorySeqStore(request.since ?? null),
  });
  socket = client;
  client.on("connect", () => post({ status: "connected" }));
  for (const event of ["close", "reconnect", "disconnect", "error"] as const) {
    client.on(event, () => post({ status: "connecting" }));
  }
  client.on("noreconnect", (info) => post(info.code === undefined ? { status: "noreconnect" } : { status: "noreconnect", code: info.code }));
  client.on("orderUpdate", (update) => post(update));
  void client.connect(request.session, request.token);
};
