// A URL the WebSocket constructor refuses: reported once, connect() rejects, no retry (no server needed).
import assert from "node:assert/strict";
import test from "node:test";

import NodeWebSocket from "ws";

import { EventsClient, OrderUpdatesClient } from "../dist/index.js";

const NativeWebSocket = globalThis.WebSocket;

/** Everything a client reports, in order. */
function record(client) {
  const seen = [];
  for (const event of ["error", "noreconnect", "reconnect", "disconnect", "close", "connect"]) {
    client.on(event, (...args) => seen.push([event, ...args]));
  }
  const statuses = [];
  client.onConnectionStatus((status) => statuses.push(status));
  return { seen, statuses };
}

/** Fails the test on an unhandled rejection while `body` runs (the old client left one behind). */
async function noUnhandledRejection(body) {
  const unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  try {
    await body();
    await new Promise((resolve) => setImmediate(resolve)); // let a stray rejection be reported
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
  assert.deepEqual(unhandled, []);
}

for (const [name, WebSocket] of [
  ["the global WebSocket", NativeWebSocket],
  ["the ws package", NodeWebSocket],
]) {
  test(`EventsClient, ${name}: a URL without ws:// gives INVALID_URL, rejects connect(), never retries`, async () => {
    assert.ok(WebSocket, "no global WebSocket: run with --experimental-websocket on Node.js 20");
    await noUnhandledRejection(async () => {
      const client = new EventsClient("127.0.0.1:18731/ws", "a-token", { WebSocket });
      const { seen, statuses } = record(client);
      await assert.rejects(client.connect(), /not reconnecting \(invalid WebSocket URL "127\.0\.0\.1:18731\/ws"/);
      assert.deepEqual(
        seen.map(([event]) => event),
        ["error", "noreconnect"],
      );
      const [, error] = seen[0];
      assert.equal(error.type, "socket_error");
      assert.equal(error.code, "INVALID_URL");
      assert.match(error.message, /expected ws:\/\/host\/… or wss:\/\/host\/…/);
      assert.ok(error.cause instanceof Error || error.cause instanceof DOMException, String(error.cause));
      assert.deepEqual(seen[1][1], { reason: "invalid_url", attempts: 0 });
      assert.deepEqual(statuses, ["connecting", "noreconnect"]);
      assert.equal(client.getStatus(), "noreconnect");
      assert.equal(client.getConnectionState(), "disconnected");
      assert.equal(client.connected(), false);
    });
  });
}

test("OrderUpdatesClient: a port out of range gives INVALID_URL, and the message keeps the credentials out", async () => {
  await noUnhandledRejection(async () => {
    const client = new OrderUpdatesClient("ws://127.0.0.1:99999/ws/orders", null, { WebSocket: NodeWebSocket });
    const { seen, statuses } = record(client);
    const rejected = await client.connect("a-session", "secret-token").then(
      () => assert.fail("connect() resolved"),
      (err) => err,
    );
    assert.match(rejected.message, /invalid WebSocket URL "ws:\/\/127\.0\.0\.1:99999\/ws\/orders\?…"/);
    assert.deepEqual(
      seen.map(([event]) => event),
      ["error", "noreconnect"],
    );
    const [, error] = seen[0];
    assert.equal(error.code, "INVALID_URL");
    assert.equal(error.cause.name, "SyntaxError");
    for (const text of [rejected.message, error.message, error.cause.message, String(error.cause)]) {
      assert.ok(!text.includes("secret-token") && !text.includes("a-session"), text);
    }
    assert.deepEqual(statuses, ["connecting", "noreconnect"]);
    // connect() again starts over, and fails the same way (it does not hang either).
    await assert.rejects(client.connect(), /invalid WebSocket URL/);
    assert.equal(seen.filter(([event]) => event === "error").length, 2);
  });
});
