// EventsClient's token refresh on auth_expiring, against a real daphne process.
import assert from "node:assert/strict";
import test from "node:test";

import { EventsClient } from "../../dist/index.js";
import { live, next } from "./server.mjs";

test("auth_expiring asks for a fresh token and the socket outlives the first one", async () => {
  const { shortJwt, jwt, shortExpiresAt } = live.users.expiring;
  const asked = [];
  const client = new EventsClient(`${live.ws}/ws`, shortJwt, {
    onTokenRefresh: (expiresAt) => {
      asked.push(expiresAt);
      return jwt;
    },
  });
  const closes = [];
  client.on("close", (info) => closes.push(info.code));
  const first = next(client, "connection");
  await client.connect();
  const [hello] = await first;
  const [warning] = await next(client, "auth_expiring", () => true, 20000);
  const [renewed] = await next(client, "connection");
  assert.equal(renewed.sessionId, hello.sessionId); // the same socket
  assert.deepEqual(asked, [warning.expiresAt]);
  assert.ok(Date.parse(renewed.tokenExpiresAt) > Date.parse(hello.tokenExpiresAt));
  // Past the first token's expiry (plus a second), the socket still answers.
  const wait = Math.max(0, shortExpiresAt * 1000 - Date.now()) + 1000;
  await new Promise((resolve) => setTimeout(resolve, wait));
  const pong = next(client, "pong");
  client.send({ type: "ping" });
  await pong;
  assert.deepEqual(closes, []);
  client.disconnect();
});
