// EventsClient (/ws) against a real daphne process.
import assert from "node:assert/strict";
import test from "node:test";

import { EventsClient, MemorySeqStore } from "../../dist/index.js";
import { cancelOrder, live, next, placeOrder, until } from "./server.mjs";

const { jwt } = live.users.events;
const url = `${live.ws}/ws`;

/** A token provider that holds a reconnect back until `open()` is called. */
function gatedToken() {
  let open = () => {};
  let gate = Promise.resolve();
  return {
    token: async () => {
      await gate;
      return jwt;
    },
    close: () => (gate = new Promise((resolve) => (open = resolve))),
    open: () => open(),
  };
}

let resumeFrom = null; // what the first test saw, for the second

test("events arrive typed, once each and in seq order across a dropped connection", async () => {
  const gated = gatedToken();
  const client = new EventsClient(url, gated.token, { reconnect: { baseDelay: 100 } });
  const seqs = [];
  const updates = [];
  const byOrder = new Map();
  client.on("message", (m) => typeof m.seq === "number" && seqs.push(m.seq));
  client.on("order_update", (m) => updates.push(`${m.data.updateType}:${m.data.orderId}`));
  client.onOrderUpdate("*", (u) => byOrder.set(u.orderId, [...(byOrder.get(u.orderId) ?? []), u.updateType]));
  const orderEvents = [];
  client.on("orderUpdate", (u) => orderEvents.push(u.orderId));
  const connection = next(client, "connection");
  await client.connect();
  const [hello] = await connection;
  assert.equal(hello.status, "connected");
  assert.equal(client.getConnectionState(), "authenticated");
  assert.equal(client.getLastSeq(), hello.lastSeq); // a fresh client starts from the server's seq

  client.subscribe("market:BTC_USD");
  const [sub] = await next(client, "room_subscription", (m) => m.channel === "market:BTC_USD");
  assert.equal(sub.status, "subscribed");
  assert.ok(sub.subscribedRooms.includes("market:BTC_USD"));

  const first = await placeOrder(jwt);
  await until(client, () => updates.length === 1, 15000, "ORDER_PLACED");
  const seen = [];
  client.onOrderUpdate(first, (u) => seen.push(u.updateType));

  // Away: the reconnect waits at the token provider while two more events are published.
  gated.close();
  const away = next(client, "disconnect");
  client.drop();
  await away;
  await cancelOrder(jwt, first);
  const second = await placeOrder(jwt);
  const resumed = next(client, "resumed");
  const back = next(client, "connect");
  const rejoined = next(client, "room_subscription", (m) => m.channel === "market:BTC_USD");
  gated.open();
  await back;
  const [done] = await resumed;
  assert.ok(done.replayed >= 2, `replayed ${done.replayed}`);
  await until(client, () => updates.length === 3, 15000, "three order updates");
  assert.equal((await rejoined)[0].status, "subscribed"); // the room came back with the connection

  assert.deepEqual(updates, [`ORDER_PLACED:${first}`, `ORDER_CANCELLED:${first}`, `ORDER_PLACED:${second}`]);
  assert.deepEqual(seen, ["ORDER_CANCELLED"]);
  assert.deepEqual(byOrder.get(first), ["ORDER_PLACED", "ORDER_CANCELLED"]);
  assert.deepEqual(orderEvents, [first, first, second]);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `gap or repeat in ${seqs}`);

  // Replayed again on an open socket: the client drops what it already delivered.
  const count = updates.length;
  const again = next(client, "resumed");
  client.send({ type: "resume", since: client.getLastSeq() - 2 });
  const [replay] = await again;
  assert.equal(replay.replayed, 2);
  assert.equal(updates.length, count);
  resumeFrom = client.getLastSeq() - 2;
  client.disconnect();
  assert.equal(client.getStatus(), "disconnected");
});

test("a stored seq resumes a new client after it", async () => {
  assert.ok(resumeFrom !== null);
  const store = new MemorySeqStore(resumeFrom);
  const client = new EventsClient(url, jwt, { seqStore: store });
  const types = [];
  client.on("order_update", (m) => types.push(m.data.updateType));
  const resumed = next(client, "resumed");
  await client.connect();
  const [done] = await resumed;
  assert.equal(done.since, resumeFrom);
  assert.deepEqual(types, ["ORDER_CANCELLED", "ORDER_PLACED"]);
  assert.equal(store.load(), resumeFrom + 2); // saved as it went
  client.disconnect();
});

test("a refused token is final: error, close 4001, noreconnect, connect() rejects", async () => {
  const client = new EventsClient(url, "not-a-jwt", { reconnect: { baseDelay: 50 } });
  const reconnects = [];
  client.on("reconnect", (n) => reconnects.push(n));
  const error = next(client, "error", (e) => e.type === "error");
  const closed = next(client, "close");
  const gaveUp = next(client, "noreconnect");
  await assert.rejects(client.connect(), /4001/);
  assert.equal((await error)[0].code, "AUTHENTICATION_FAILED");
  assert.equal((await closed)[0].code, 4001);
  assert.deepEqual((await gaveUp)[0], { reason: "close_code", code: 4001, attempts: 0 });
  assert.equal(client.getStatus(), "noreconnect");
  assert.deepEqual(reconnects, []);
});

test("the read timeout reconnects a silent socket; the heartbeat keeps one alive", async () => {
  const silent = new EventsClient(url, jwt, { heartbeatInterval: 0, readTimeout: 600, reconnect: { baseDelay: 50 } });
  const closed = next(silent, "close", (info) => info.code === 3008);
  await silent.connect();
  await closed;
  await next(silent, "connect"); // and it came back
  silent.disconnect();

  const beating = new EventsClient(url, jwt, { heartbeatInterval: 200, readTimeout: 800 });
  const closes = [];
  beating.on("close", (info) => closes.push(info.code));
  let pongs = 0;
  beating.on("pong", () => (pongs += 1));
  await beating.connect();
  await until(beating, () => pongs >= 8, 5000, "eight pongs"); // 1.6 s: two read timeouts
  assert.deepEqual(closes, []);
  beating.disconnect();
});
