// Drives static/axisor-ws.js under Node (--experimental-websocket): prints one JSON line per
// personal event; drops its connection after DROP_AFTER events, to show it resumes with no gap.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
// Node 22+ has WebSocket built in, Node 20 behind --experimental-websocket; older: the `ws` package.
if (typeof globalThis.WebSocket === "undefined") globalThis.WebSocket = require("ws");
const AxisorSocket = require("../../static/axisor-ws.js");
const [url, token, dropAfter, stopAt] = process.argv.slice(2);
const client = new AxisorSocket({ url, getToken: async () => token, baseDelay: 200 });
let seen = 0;
client.on("status", (s) => console.log(JSON.stringify({ status: s.state })));
client.on("*", (msg) => {
  if (typeof msg.seq !== "number") return;
  seen += 1;
  console.log(JSON.stringify({ seq: msg.seq, type: msg.type }));
  if (seen === Number(dropAfter)) client.drop();
  if (msg.seq >= Number(stopAt)) {
    client.close();
    process.exit(0);
  }
});
client.connect();
setTimeout(() => process.exit(3), 30000);
