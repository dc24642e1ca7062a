// OrderUpdatesClient (/ws/orders) against a real daphne process.
import assert from "node:assert/strict";
import test from "node:test";

import { OrderUpdatesClient } from "../../dist/index.js";
import { cancelOrder, live, next, placeOrder, rest, until } from "./server.mjs";

const url = `${live.ws}/ws/orders`;

test("seed 004's API: connect(session, token), onOrderUpdate, onConnectionStatus, resume after a drop", async () => {
  const { jwt } = live.users.orders;
  const { session, token } = await rest("POST", "/api/auth/sessions", jwt);
  let gate = Promise.resolve();
  let open = () => {};
  const client = new OrderUpdatesClient(url, async () => (await gate, { session, token }), { reconnect: { baseDelay: 100 } });
  const statuses = [];
  client.onConnectionStatus((s) => statuses.push(s));
  const all = [];
  client.onAllOrders((u) => all.push(u));
  await client.connect();
  assert.ok(client.connected());

  const first = await placeOrder(jwt);
  const mine = [];
  client.onOrderUpdate(first, (u) => mine.push(u.updateType));
  await until(client, () => all.length === 1, 15000, "ORDER_PLACED");
  const placed = all[0];
  assert.equal(placed.updateType, "ORDER_PLACED");
  assert.equal(placed.orderId, first);
  assert.equal(placed.orderStatus, "PENDING");
  assert.equal(placed.tradingSymbol, "BTC_USD");
  assert.equal(typeof placed.seq, "number");
  assert.equal(client.getLastSeq(), placed.seq);

  gate = new Promise((resolve) => (open = resolve));
  const away = next(client, "disconnect");
  client.drop();
  await away;
  await cancelOrder(jwt, first);
  const second = await placeOrder(jwt);
  const resumed = next(client, "resumed");
  open();
  const [done] = await resumed;
  assert.equal(done.since, placed.seq); // the URL carried &since=
  await until(client, () => all.length === 3, 15000, "three updates");
  assert.deepEqual(
    all.map((u) => `${u.updateType}:${u.orderId}`),
    [`ORDER_PLACED:${first}`, `ORDER_CANCELLED:${first}`, `ORDER_PLACED:${second}`],
  );
  assert.deepEqual(mine, ["ORDER_CANCELLED"]);
  for (let i = 1; i < all.length; i++) assert.ok(all[i].seq > all[i - 1].seq);
  client.disconnect();
  assert.deepEqual(statuses, ["connecting", "connected", "disconnected", "reconnecting", "connected", "disconnected"]);
});

test("revoked credentials close with 4003 and the client does not come back", async () => {
  const { jwt } = live.users.orders;
  const { session, token } = await rest("POST", "/api/auth/sessions", jwt);
  const client = new OrderUpdatesClient(url, null, { reconnect: { baseDelay: 50 } });
  const reconnects = [];
  client.on("reconnect", (n) => reconnects.push(n));
  await client.connect(session, token);
  const closed = next(client, "close");
  const gaveUp = next(client, "noreconnect");
  await rest("DELETE", `/api/auth/sessions/${session}`, jwt);
  assert.equal((await closed)[0].code, 4003);
  assert.deepEqual((await gaveUp)[0], { reason: "close_code", code: 4003, attempts: 0 });
  assert.equal(client.getStatus(), "noreconnect");
  assert.deepEqual(reconnects, []);
});

test("over the tier's connection limit (4029) the client backs off for a minute", async () => {
  const { jwt } = live.users.limited; // basic: one /ws/orders connection at a time
  const credentials = await rest("POST", "/api/auth/sessions", jwt);
  const holder = new OrderUpdatesClient(url, credentials);
  await holder.connect();
  const second = new OrderUpdatesClient(url, credentials);
  const error = next(second, "error", (e) => e.type === "error");
  const closed = next(second, "close");
  const retry = next(second, "reconnect");
  void second.connect();
  const [refusal] = await error;
  assert.equal(refusal.code, "RATE_LIMIT_EXCEEDED");
  assert.equal(refusal.closeCode, 4029);
  assert.equal((await closed)[0].code, 4029);
  const [attempt, delaySeconds] = await retry;
  assert.equal(attempt, 1);
  assert.ok(delaySeconds >= 45 && delaySeconds <= 60, `waits ${delaySeconds} s`);
  second.disconnect();
  assert.ok(holder.connected()); // the first connection is untouched
  holder.disconnect();
});
