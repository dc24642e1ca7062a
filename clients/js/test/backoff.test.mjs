// The reconnect schedules and the seq stores, without a server.
import assert from "node:assert/strict";
import test from "node:test";

import {
  EVENTS_RECONNECT,
  MemorySeqStore,
  ORDERS_RECONNECT,
  WebStorageSeqStore,
  reconnectDelay,
} from "../dist/index.js";

const exact = () => 0; // no jitter taken off

test("seed 004's schedule: 1, 2, 4, 8, then 10 s, for 300 attempts", () => {
  const delays = [1, 2, 3, 4, 5, 6, 300].map((n) => reconnectDelay(ORDERS_RECONNECT, n, 1006, exact));
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 10000, 10000, 10000]);
  assert.equal(reconnectDelay(ORDERS_RECONNECT, 301, 1006, exact), null);
});

test("seed 000's schedule: 1, 2, 4, 8, 16 s, then it gives up", () => {
  const delays = [1, 2, 3, 4, 5].map((n) => reconnectDelay(EVENTS_RECONNECT, n, 1006, exact));
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000]);
  assert.equal(reconnectDelay(EVENTS_RECONNECT, 6, 1006, exact), null);
});

test("never after 4001, 4003 or 4004", () => {
  for (const code of [4001, 4003, 4004]) {
    assert.equal(reconnectDelay(ORDERS_RECONNECT, 1, code, exact), null);
    assert.equal(reconnectDelay(EVENTS_RECONNECT, 1, code, exact), null);
  }
});

test("a minute at least after 4008, 4029 and 4030; the usual schedule after 4009, 4013, 4040", () => {
  for (const code of [4008, 4029, 4030]) assert.equal(reconnectDelay(ORDERS_RECONNECT, 1, code, exact), 60000);
  for (const code of [4009, 4013, 4040]) assert.equal(reconnectDelay(ORDERS_RECONNECT, 1, code, exact), 1000);
});

test("jitter only shortens a delay, by at most its fraction", () => {
  assert.equal(reconnectDelay(ORDERS_RECONNECT, 4, 1006, () => 1), 6000);
  assert.equal(reconnectDelay({ ...ORDERS_RECONNECT, autoReconnect: false }, 1, 1006, exact), null);
});

test("the stores keep the last seq", () => {
  const memory = new MemorySeqStore(7);
  assert.equal(memory.load(), 7);
  memory.save(9);
  assert.equal(memory.load(), 9);
  const items = new Map();
  const storage = { getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, v) };
  const web = new WebStorageSeqStore("axisor:seq", storage);
  assert.equal(web.load(), null);
  web.save(42);
  assert.equal(items.get("axisor:seq"), "42");
  assert.equal(new WebStorageSeqStore("axisor:seq", storage).load(), 42);
  items.set("axisor:seq", "garbage");
  assert.equal(web.load(), null);
});
