/*
 * axisor-ws.js — browser client for the Axisor /ws events protocol (no build step).
 *
 * The seed's AxisorWebSocketClient, plus what it lacks: every personal event exactly once across
 * reconnects. The client remembers the last `seq` it saw, drops anything at or below it, and after
 * a reconnect sends {"type":"resume","since":lastSeq} so the server replays what it missed.
 *
 *   const client = new AxisorSocket({ url: "wss://host/ws", getToken: async () => jwt });
 *   client.on("in_app_notification", (msg) => ...);
 *   client.on("status", (s) => ...);            // connecting | connected | reconnecting | disconnected | noreconnect
 *   client.on("resume_failed", (msg) => ...);   // the log no longer holds what you missed: re-fetch state
 *   client.subscribe("market:BTC_USD");
 *   client.connect();
 *
 * Backoff: 1, 2, 4, 8 s, capped at 10 s, with jitter; at most 300 tries (the seed's numbers).
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.AxisorSocket = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  function AxisorSocket(options) {
    this.url = options.url;
    this.getToken = options.getToken || (() => Promise.resolve(options.token));
    this.maxTries = options.maxTries ?? 300;
    this.maxDelay = options.maxDelay ?? 10000;
    this.baseDelay = options.baseDelay ?? 1000;
    this.lastSeq = options.lastSeq ?? null; // null: start from the server's current seq
    this.rooms = new Set(options.rooms || []);
    this.handlers = new Map();
    this.ws = null;
    this.tries = 0;
    this.timer = null;
    this.stopped = false;
    this.state = "disconnected";
  }

  AxisorSocket.prototype.on = function (type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return this;
  };

  AxisorSocket.prototype.off = function (type, handler) {
    const set = this.handlers.get(type);
    if (set) set.delete(handler);
    return this;
  };

  AxisorSocket.prototype._emit = function (type, payload) {
    for (const key of [type, "*"]) {
      const set = this.handlers.get(key);
      if (!set) continue;
      for (const handler of set) {
        try {
          handler(payload);
        } catch (err) {
          console.error("axisor-ws handler failed", err);
        }
      }
    }
  };

  AxisorSocket.prototype._status = function (state, detail) {
    this.state = state;
    this._emit("status", { state, ...detail });
  };

  AxisorSocket.prototype.connect = async function () {
    this.stopped = false;
    clearTimeout(this.timer);
    this._status(this.tries ? "reconnecting" : "connecting", { attempt: this.tries });
    let token;
    try {
      token = await this.getToken();
    } catch (err) {
      this._status("disconnected", { reason: "no token" });
      return this._retry();
    }
    const ws = new WebSocket(this.url);
    this.ws = ws;
    // Resuming in the auth message is atomic: the missed events come before any live one.
    const since = this.lastSeq;
    ws.onopen = () => ws.send(JSON.stringify(since === null ? { type: "auth", token } : { type: "auth", token, since }));
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this._status("disconnected", { code: event.code, reason: event.reason });
      this._retry();
    };
    ws.onerror = () => {};
  };

  AxisorSocket.prototype._receive = function (raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (err) {
      return;
    }
    if (msg.type === "connection") {
      this.tries = 0;
      if (this.lastSeq === null) this.lastSeq = msg.lastSeq;
      this._status("connected", { userId: msg.userId, sessionId: msg.sessionId });
      for (const room of this.rooms) this._send({ type: "subscribe", channel: room });
    } else if (msg.type === "resume_failed") {
      this.lastSeq = msg.lastSeq; // continue live; the app must re-fetch its state
    } else if (typeof msg.seq === "number") {
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // seen already
      this.lastSeq = msg.seq;
    }
    this._emit(msg.type, msg);
  };

  AxisorSocket.prototype._retry = function () {
    if (this.stopped) return;
    if (this.tries >= this.maxTries) {
      this._status("noreconnect", { tries: this.tries });
      return;
    }
    this.tries += 1;
    const delay = Math.min(this.baseDelay * 2 ** (this.tries - 1), this.maxDelay);
    const jittered = delay / 2 + Math.random() * (delay / 2);
    this.timer = setTimeout(() => this.connect(), jittered);
  };

  AxisorSocket.prototype._send = function (message) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(message));
  };

  AxisorSocket.prototype.subscribe = function (channel) {
    this.rooms.add(channel);
    if (this.state === "connected") this._send({ type: "subscribe", channel });
  };

  AxisorSocket.prototype.unsubscribe = function (channel) {
    this.rooms.delete(channel);
    if (this.state === "connected") this._send({ type: "unsubscribe", channel });
  };

  AxisorSocket.prototype.send = function (message) {
    this._send(message);
  };

  /** Drop the current connection as a network failure would (it reconnects and resumes). */
  AxisorSocket.prototype.drop = function () {
    if (this.ws) this.ws.close();
  };

  AxisorSocket.prototype.close = function () {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    this._status("disconnected", { reason: "closed by client" });
  };

  return AxisorSocket;
});
