// The real server the live tests talk to: tests/js/test_realtime_package.py starts daphne, makes
// the users and passes everything here in AXISOR_LIVE (JSON).
import assert from "node:assert/strict";

const raw = process.env.AXISOR_LIVE;
assert.ok(raw, "AXISOR_LIVE is unset: run these through tests/js/test_realtime_package.py (pytest)");
export const live = JSON.parse(raw);

/** One REST call with a JWT; answers the parsed body (and fails the test on a non-2xx). */
export async function rest(method, path, jwt, body) {
  const response = await fetch(`${live.http}${path}`, {
    method,
    headers: { Authorization: `Bearer ${jwt}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path} → ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Place a small limit order far from the market (it stays working) and answer its orderId. */
export async function placeOrder(jwt) {
  const order = await rest("POST", "/api/orders", jwt, {
    tradingSymbol: "BTC_USD",
    orderType: "LIMIT",
    transactionType: "BUY",
    quantity: 1,
    price: 1000,
    leverage: 10,
  });
  return order.orderId;
}

export async function cancelOrder(jwt, orderId) {
  await rest("POST", `/api/orders/${orderId}/cancel`, jwt);
}

/** Resolves with the arguments of the first `event` on `client` that `pred` accepts. */
export function next(client, event, pred = () => true, ms = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const off = client.on(event, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

/** Resolves once `check()` is true (checked on every event the client sees). */
export function until(client, check, ms = 15000, what = "the condition") {
  return new Promise((resolve, reject) => {
    if (check()) return resolve();
    const timer = setTimeout(() => {
      off();
      reject(new Error(`${what} not met within ${ms} ms`));
    }, ms);
    const off = client.on("message", () => {
      if (!check()) return;
      clearTimeout(timer);
      queueMicrotask(off);
      resolve();
    });
  });
}
