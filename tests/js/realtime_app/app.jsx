// A small React page as a frontend developer writes it with @axisor/realtime: seed 000's
// useWebSocket hook on /ws, and seed 004's Web Worker (the package's worker entry) on /ws/orders.
// The test passes the server and the credentials in the URL's fragment, as JSON. Rendered under
// StrictMode, as a Vite or Next.js app is in development: every effect runs, is cleaned up, runs again.
import { StrictMode, useCallback, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { useWebSocket } from "@axisor/realtime/react";

const config = JSON.parse(decodeURIComponent(location.hash.slice(1)));

function Dashboard() {
  // A stable token function, as docs/topics/js-package.md shows (a real page fetches a fresh token).
  const getToken = useCallback(async () => config.jwt, []);
  const { client, connectionState, error, isConnected, subscribe, unsubscribe } = useWebSocket(
    `${config.ws}/ws`,
    getToken,
  );
  const [rooms, setRooms] = useState([]);
  const [orders, setOrders] = useState([]);

  useEffect(() => {
    if (!isConnected) return undefined;
    subscribe("market:BTC_USD");
    return () => unsubscribe("market:BTC_USD");
  }, [isConnected, subscribe, unsubscribe]);

  useEffect(() => {
    if (!client) return undefined;
    const onRooms = (m) => setRooms(m.subscribedRooms);
    const onOrder = (m) => setOrders((prev) => [...prev, `${m.seq} ${m.data.updateType} ${m.data.orderId}`]);
    client.on("room_subscription", onRooms);
    client.on("order_update", onOrder);
    return () => {
      client.off("room_subscription", onRooms);
      client.off("order_update", onOrder);
    };
  }, [client]);

  return (
    <section>
      <p id="state">{connectionState}</p>
      <p id="connected">{isConnected ? "yes" : "no"}</p>
      <p id="error">{error ? String(error.code ?? error.message) : ""}</p>
      <p id="rooms">{rooms.join(" ")}</p>
      <ul id="orders">
        {orders.map((line) => (
          <li key={line}>{line}</li>
        ))}
      </ul>
    </section>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <Dashboard />
  </StrictMode>,
);

// Seed 004's main.js, with three changes: the worker's URL, `{ type: "module" }` (the package's
// worker is an ES module) and the socket's URL in `connect` (the page is on another origin).
const worker = new Worker(config.worker, { type: "module" });
worker.onmessage = (event) => {
  const data = JSON.parse(event.data);
  if (data.status) {
    document.getElementById("worker-status").textContent = data.status;
  } else if (data.updateType) {
    const li = document.createElement("li");
    li.textContent = `${data.seq} ${data.updateType} ${data.orderId}`;
    document.getElementById("worker-orders").append(li);
  }
};
worker.postMessage(
  JSON.stringify({ msgType: "connect", session: config.session, token: config.token, url: `${config.ws}/ws/orders` }),
);
