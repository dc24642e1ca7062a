// Compiled (never run) by `npm run build`: the published .d.ts files type each event as documented.
import { EventsClient, OrderUpdatesClient, ConnectionState } from "../dist/index.js";
import { useWebSocket } from "../dist/react.js";
import NodeWebSocket from "ws";
const c = new EventsClient("ws://x/ws", "t", { maxReconnectAttempts: 3 });
c.on("market_data_update", (m) => { const p: number = m.data.price; void p; });
c.on("order_update", (m) => { const s: number = m.seq; const st: string = m.data.orderStatus; void s; void st; });
c.on("error", (e) => { const code: string = e.code; void code; });
c.on("reconnect", (n, d) => { const x: number = n + d; void x; });
// @ts-expect-error unknown event
c.on("no_such_event", () => {});
// @ts-expect-error wrong payload field
c.on("price_alert", (m) => m.data.nope);
const o = new OrderUpdatesClient("ws://x/ws/orders");
o.onOrderUpdate("*", (u) => { const q: number = u.filledQuantity; void q; });
o.on("heartbeat", (h) => { const s: number = h.lastSeq; void s; });
const s: ConnectionState = c.getConnectionState(); void s;
void useWebSocket;
// Any WebSocket class: the DOM's, and the `ws` package's on Node.js (no cast needed).
new EventsClient("ws://x/ws", "t", { WebSocket: NodeWebSocket });
new OrderUpdatesClient("ws://x/ws/orders", null, { WebSocket: NodeWebSocket });
new EventsClient("ws://x/ws", "t", { WebSocket: globalThis.WebSocket });
new OrderUpdatesClient("ws://x/ws/orders", null, { WebSocket });
// @ts-expect-error not a WebSocket class
new EventsClient("ws://x/ws", "t", { WebSocket: Date });
