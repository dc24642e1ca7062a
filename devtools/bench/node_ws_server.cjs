// A reference from outside Python for bench_fanout: a plain Node server on `ws` (WebSocketServer,
// the most used Node WebSocket server) that broadcasts in process the way ws's README shows.
//
// NODE_PATH=clients/js/node_modules node devtools/bench/node_ws_server.cjs PORT
// Clients connect to / and receive; a connection to /publish?count=M&rate=R makes the server
// broadcast M messages (R per second, 0 = as fast as it can) to every other client, then answer
// "done". ws is the JS client's pinned devDependency (clients/js/package-lock.json, installed by
// scripts/bootstrap test): NODE_PATH finds it there, so this file needs no package.json of its own.
"use strict";

const { setTimeout: sleep } = require("node:timers/promises");
const { WebSocket, WebSocketServer } = require("ws");

const BACKLOG = 1024; // the same listen backlog as the other servers in the benchmark
const port = Number(process.argv[2]);

// The send time in unix seconds, below a millisecond like Python's time.time(): Date.now() would
// round every latency the client measures to the millisecond.
const now = () => (performance.timeOrigin + performance.now()) / 1000;

// perMessageDeflate off as for the others (ws's default, said here so it stays so); ws sends no
// pings unless asked.
const wss = new WebSocketServer({ host: "127.0.0.1", port, backlog: BACKLOG, perMessageDeflate: false }, () =>
  console.error(`Listening on TCP address 127.0.0.1:${port}`),
);

async function publish(publisher, count, rate) {
  for (let i = 0; i < count; i++) {
    // compact, as our server writes it (the Python references' json.dumps adds a space after "," and ":")
    const data = JSON.stringify({ type: "bench", channel: "system", data: { i, t: now(), pad: "x".repeat(40) } });
    // ws's broadcast to every other client: wss.clients holds the publisher too
    wss.clients.forEach((client) => {
      if (client !== publisher && client.readyState === WebSocket.OPEN) {
        client.send(data);
      }
    });
    if (rate) {
      await sleep(1000 / rate);
    } else if (i % 50 === 49) {
      await new Promise(setImmediate); // let the sockets' I/O run, as the Python ones' sleep(0)
    }
  }
  publisher.send("done");
}

wss.on("connection", (ws, request) => {
  // A frame the server cannot parse is an `error` event: without a listener it would end the process.
  ws.on("error", console.error);
  const url = new URL(request.url, "http://127.0.0.1");
  if (url.pathname === "/publish") {
    publish(ws, Number(url.searchParams.get("count")), Number(url.searchParams.get("rate") ?? 0));
  }
  // any other path is a receiver: wss.clients keeps it until it closes
});
