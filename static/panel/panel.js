/*
 * panel.js — live updates for the staff panel (/panel/), over /ws with the @axisor/realtime
 * package's EventsClient (clients/js, built to clients/js/dist and served at static/realtime/).
 * An ES module: no inline script, so it runs under the panel's `script-src 'self'`.
 *
 * The page asks the server for a short-lived socket token (POST /panel/token with the CSRF token;
 * the session cookie proves who is asking), connects to /ws, and is auto-joined to admin:staff:
 *   admin_events  one message per committed batch of logged events: {counts, total, events:[compact]}
 *   admin_stats   once per second per server process: connections, rooms, market fan-out counts
 * Each page below picks what it needs. When the server warns that the token is about to expire
 * (auth_expiring), the client asks fetchToken for a fresh one and sends it on the same socket.
 */
import { EventsClient } from "../realtime/index.js";

(function () {
  "use strict";

  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const live = document.getElementById("live");
  const LABELS = {
    connecting: "connecting…",
    connected: "connected",
    reconnecting: "reconnecting…",
    disconnected: "disconnected",
    noreconnect: "offline (reload the page)",
  };

  // ---- small DOM helpers ------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  function clock(iso) {
    const d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toISOString().slice(11, 19);
  }
  function dropEmpty(container) {
    const empty = container.querySelector(".empty");
    if (empty) empty.remove();
  }
  function trim(container, max) {
    while (container.children.length > max) container.lastElementChild.remove();
  }
  function csrfInput() {
    return el("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrf });
  }
  function postButton(action, label, cls) {
    return el("form", { method: "post", action }, csrfInput(), el("button", { type: "submit", class: cls }, label));
  }
  function flash(node) {
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
  }

  // ---- the socket -------------------------------------------------------------------------
  async function fetchToken() {
    const response = await fetch(body.dataset.tokenUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrf },
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error("socket token refused: " + response.status);
    return (await response.json()).token;
  }

  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  // Seed 004's schedule (1, 2, 4, 8, then 10 s, 300 tries) rather than seed 000's five attempts:
  // an operator's page should ride out a server restart. Disconnected by staff (4004) or access
  // revoked (4003) is final: the page says "offline (reload the page)".
  const client = new EventsClient(url, fetchToken, { reconnect: { maxAttempts: 300, maxDelay: 10000 } });
  client.onConnectionStatus((state) => {
    live.dataset.state = state;
    live.textContent = "Live: " + (LABELS[state] || state);
  });
  // Messages reach the page's handlers through one router, so that they can wait while the page
  // re-reads its live regions (see resync).
  const listeners = new Map();
  let queued = null; // messages held while a resync is in flight
  function listen(type, handler) {
    if (!listeners.has(type)) listeners.set(type, []);
    listeners.get(type).push(handler);
  }
  function route(msg) {
    for (const handler of listeners.get(msg.type) || []) {
      try {
        handler(msg);
      } catch (err) {
        console.error("panel handler failed", err);
      }
    }
  }
  client.on("message", (msg) => {
    if (!msg || !listeners.has(msg.type)) return;
    if (queued) queued.push(msg);
    else route(msg);
  });
  // Every admin_events entry, one at a time, with the batch's counts for pages that want totals.
  function onEntries(handler) {
    listen("admin_events", (msg) => {
      for (const entry of msg.data.events) handler(entry, msg.data);
    });
  }

  // A change committed between the page's render and its socket joining admin:staff (or while the
  // socket was reconnecting) would never show. So on every connect the page re-reads its live
  // regions ([data-live-region]) from the server, holding socket messages meanwhile and replaying
  // them on top: nothing is missed, and updates are idempotent (orders by version, rows by id).
  async function resync() {
    const regions = [...document.querySelectorAll("[data-live-region]")];
    if (!regions.length) return;
    queued = queued || [];
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const region of regions) {
          const replacement = fresh.getElementById(region.id);
          if (replacement) region.innerHTML = replacement.innerHTML;
        }
      }
    } catch (err) {
      console.warn("resync failed", err);
    }
    const held = queued;
    queued = null;
    for (const msg of held) route(msg);
  }
  client.onConnectionStatus((state) => {
    if (state === "connected") resync();
  });

  // ---- dashboard --------------------------------------------------------------------------
  function dashboard() {
    const processes = new Map(); // process id → {stats, seen}
    const perSecond = new Map(); // type → Map(second → count)
    const perMinute = new Map(); // type → Map("YYYY-MM-DDTHH:MMZ" → count)
    const history = JSON.parse(document.getElementById("history").textContent);
    const MINUTES = history.minutes;
    for (const [type, minutes] of Object.entries(history.counts)) perMinute.set(type, new Map(Object.entries(minutes)));
    for (const row of document.querySelectorAll("#processes tbody tr[data-process]")) {
      // rendered from Redis: the time of the process's last report (the page drops it if it goes quiet)
      processes.set(row.dataset.process, { stats: null, seen: Date.parse(row.dataset.seen) || Date.now(), row });
    }

    const FANOUT_TYPES = { market_data: "market_data_update", historical_data: "historical_data_update" };
    function minuteKey(ms) {
      return new Date(ms).toISOString().slice(0, 16) + "Z";
    }
    function count(type, n) {
      const now = Date.now();
      const second = Math.floor(now / 1000);
      if (!perSecond.has(type)) perSecond.set(type, new Map());
      const seconds = perSecond.get(type);
      seconds.set(second, (seconds.get(second) || 0) + n);
      if (!perMinute.has(type)) perMinute.set(type, new Map());
      const minutes = perMinute.get(type);
      const key = minuteKey(now);
      minutes.set(key, (minutes.get(key) || 0) + n);
    }

    listen("admin_events", (msg) => {
      for (const [type, n] of Object.entries(msg.data.counts)) count(type, n);
      for (const entry of msg.data.events) {
        // the sections a staff member may not see are not on the page (panel/permissions.py)
        if (entry.type === "notification_status_update" && entry.data && entry.data.status === "failed" && document.getElementById("failed-list")) {
          const counter = document.getElementById("failed-count");
          counter.textContent = Number(counter.textContent) + 1;
          const list = document.getElementById("failed-list");
          list.prepend(el("li", {}, el("span", { class: "badge bad" }, entry.data.deliveryMethod), ` #${entry.data.id} to user ${entry.userId}: ${entry.data.error || ""}`));
          trim(list, 10);
        }
        if (entry.type === "server_maintenance" || entry.type === "service_status_update") notice(entry.type, entry.data);
      }
    });
    listen("admin_stats", (msg) => {
      const stats = msg.data;
      const known = processes.get(stats.process) || {};
      processes.set(stats.process, { ...known, stats, seen: Date.now() });
      for (const [channel, n] of Object.entries(stats.fanout || {})) count(FANOUT_TYPES[channel] || channel, n);
      renderProcesses();
    });

    function notice(type, data) {
      const list = document.getElementById("notices");
      if (!list) return;
      const existing = list.querySelector(`[data-notice="${data.id}"]`);
      const over = data.status === "ended" || data.status === "operational";
      if (over) {
        if (existing) existing.remove();
        if (!list.children.length) list.append(el("li", { class: "empty" }, "No notice in force."));
        return;
      }
      const badge =
        type === "server_maintenance"
          ? el("span", { class: "badge warn" }, "maintenance " + data.status)
          : el("span", { class: "badge " + (data.status === "down" ? "bad" : "warn") }, `${data.service} ${data.status}`);
      const item = el("li", { "data-notice": data.id }, badge, " " + data.message);
      dropEmpty(list);
      if (existing) existing.replaceWith(item);
      else list.prepend(item);
    }

    function renderProcesses() {
      const tbody = document.querySelector("#processes tbody");
      const now = Date.now();
      const endpoints = { "/ws": 0, "/ws/orders": 0 };
      const rooms = {};
      let slow = 0;
      for (const [pid, p] of processes) {
        // a process that stopped reporting is gone (its Redis lease lapses on the server too)
        if (now - p.seen > 5000) {
          if (p.row) p.row.remove();
          processes.delete(pid);
          continue;
        }
        if (!p.stats) continue;
        const s = p.stats;
        for (const [k, v] of Object.entries(s.connections)) endpoints[k] = (endpoints[k] || 0) + v;
        for (const [k, v] of Object.entries(s.rooms)) rooms[k] = (rooms[k] || 0) + v;
        slow += s.slowCloses || 0;
        if (!p.row || !p.row.isConnected) {
          dropEmpty(tbody);
          p.row = el("tr", { "data-process": pid },
            el("th", { scope: "row" }, pid), el("td", {}, el("time", {}, s.startedAt)),
            el("td", { class: "num", "data-col": "ws" }), el("td", { class: "num", "data-col": "orders" }),
            el("td", { class: "num", "data-col": "market" }), el("td", { "data-col": "seen" }));
          tbody.append(p.row);
        }
        p.row.querySelector('[data-col="ws"]').textContent = s.connections["/ws"] || 0;
        p.row.querySelector('[data-col="orders"]').textContent = s.connections["/ws/orders"] || 0;
        p.row.querySelector('[data-col="market"]').textContent = s.marketRooms || 0;
        p.row.querySelector('[data-col="seen"]').textContent = clock(s.time);
      }
      if (!processes.size && !tbody.children.length) {
        tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 6 }, "No server process is reporting.")));
      }
      const any = [...processes.values()].some((p) => p.stats);
      if (!any) return; // keep the server-rendered figures until the first report
      for (const node of document.querySelectorAll("[data-endpoint]")) node.textContent = endpoints[node.dataset.endpoint] || 0;
      for (const node of document.querySelectorAll("[data-room]")) node.textContent = rooms[node.dataset.room] || 0;
      document.getElementById("slow-closes").textContent = slow;
    }

    function sparkline(values) {
      const w = 160, h = 28, max = Math.max(1, ...values);
      const step = w / Math.max(1, values.length - 1);
      const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(" ");
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
      svg.setAttribute("width", w);
      svg.setAttribute("height", h);
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", "per minute: " + values.join(", "));
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", points);
      svg.append(line);
      return svg;
    }

    function renderRates() {
      const tbody = document.querySelector("#rates tbody");
      if (!tbody) return;
      const nowSecond = Math.floor(Date.now() / 1000);
      const minuteKeys = [];
      for (let i = MINUTES - 1; i >= 0; i--) minuteKeys.push(minuteKey(Date.now() - i * 60000));
      const types = [...new Set([...perSecond.keys(), ...perMinute.keys()])].sort();
      if (!types.length) return;
      dropEmpty(tbody);
      for (const type of types) {
        const seconds = perSecond.get(type) || new Map();
        let last10 = 0;
        for (const [s, n] of seconds) {
          if (s > nowSecond - 10) last10 += n;
          if (s < nowSecond - 120) seconds.delete(s);
        }
        const minutes = perMinute.get(type) || new Map();
        const series = minuteKeys.map((k) => minutes.get(k) || 0);
        let row = tbody.querySelector(`tr[data-type="${CSS.escape(type)}"]`);
        if (!row) {
          row = el("tr", { "data-type": type }, el("th", { scope: "row" }, type),
            el("td", { class: "num", "data-col": "now" }), el("td", { class: "num", "data-col": "minute" }), el("td", { "data-col": "spark" }));
          tbody.append(row);
        }
        row.querySelector('[data-col="now"]').textContent = (last10 / 10).toFixed(1);
        row.querySelector('[data-col="minute"]').textContent = series[series.length - 1];
        row.querySelector('[data-col="spark"]').replaceChildren(sparkline(series));
      }
    }

    async function readiness() {
      try {
        const response = await fetch("/readyz", { credentials: "same-origin" });
        const result = await response.json();
        for (const [name, value] of Object.entries(result.checks)) {
          const badge = document.querySelector(`[data-check="${name}"]`);
          if (badge) {
            badge.textContent = value;
            badge.className = "badge " + (value === "ok" ? "ok" : "bad");
          }
        }
        const status = document.querySelector('[data-check="status"]');
        if (status) {
          status.textContent = result.status;
          status.className = "badge " + ({ ready: "ok", degraded: "warn" }[result.status] || "bad");
        }
      } catch (err) {
        for (const badge of document.querySelectorAll("[data-check]")) {
          badge.textContent = "unreachable";
          badge.className = "badge bad";
        }
      }
    }
    renderRates();
    setInterval(() => {
      renderRates();
      renderProcesses();
    }, 1000);
    setInterval(readiness, 10000);
  }

  // ---- live event stream ------------------------------------------------------------------
  function events() {
    const tbody = document.querySelector("#stream tbody");
    const filters = { type: document.getElementById("f-type"), user: document.getElementById("f-user"), room: document.getElementById("f-room") };
    // The filters apply as they are typed; Enter must not submit (no inline handler: the CSP allows none).
    document.getElementById("event-filters").addEventListener("submit", (e) => e.preventDefault());
    const pause = document.getElementById("pause");
    const state = document.getElementById("stream-state");
    const heldNote = document.getElementById("held");
    const held = [];
    let paused = false;
    const MAX = 500;

    function matches(row) {
      const type = filters.type.value.trim();
      const user = filters.user.value.trim();
      const room = filters.room.value.trim();
      return (!type || row.dataset.type.includes(type)) && (!user || row.dataset.user === user) && (!room || row.dataset.room.includes(room));
    }
    function applyFilters() {
      for (const row of tbody.querySelectorAll("tr[data-type]")) row.hidden = !matches(row);
    }
    function detail(entry) {
      const d = entry.data || {};
      if (entry.type === "order_update") return `${d.orderId} ${d.updateType} ${d.orderStatus} filled ${d.filledQuantity}/${d.quantity} avg ${d.averagePrice}`;
      if (entry.type === "in_app_notification") return `#${d.id} ${d.title}`;
      if (entry.type === "notification_status_update") return `#${d.id} ${d.deliveryMethod}: ${d.status}`;
      if (d.message) return d.message;
      return "";
    }
    function row(entry, time) {
      const node = el("tr", { "data-type": entry.type, "data-user": entry.userId || "", "data-room": entry.room },
        el("td", {}, el("time", { datetime: time }, clock(time))), el("td", {}, entry.type), el("td", {}, entry.channel),
        el("td", {}, entry.room), el("td", {}, entry.userId || ""), el("td", { class: "num" }, entry.seq ?? ""),
        el("td", { class: "detail" }, detail(entry)));
      node.hidden = !matches(node);
      return node;
    }
    function show(rows) {
      dropEmpty(tbody);
      for (const node of rows) tbody.prepend(node);
      trim(tbody, MAX);
    }
    listen("admin_events", (msg) => {
      const rows = msg.data.events.map((entry) => row(entry, msg.data.time));
      const more = msg.data.total - msg.data.events.length;
      if (more > 0) rows.push(el("tr", { "data-type": "", "data-user": "", "data-room": "", class: "more" }, el("td", { colspan: 7 }, `… and ${more} more events in this batch (${Object.entries(msg.data.counts).map(([t, n]) => `${t}: ${n}`).join(", ")})`)));
      if (paused) {
        held.push(...rows);
        if (held.length > MAX) held.splice(0, held.length - MAX);
        heldNote.textContent = `(${held.length} waiting)`;
      } else {
        show(rows);
      }
    });
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      state.textContent = paused ? "Paused: new events wait." : "Streaming.";
      if (!paused) {
        show(held.splice(0));
        heldNote.textContent = "";
      }
    });
    for (const input of Object.values(filters)) input.addEventListener("input", applyFilters);
  }

  // ---- orders blotter ---------------------------------------------------------------------
  function orders() {
    const table = document.getElementById("orders");
    const tbody = table.querySelector("tbody");
    const actions = document.getElementById("order-actions");
    const LIVE = new Set(["PENDING", "OPEN", "TRIGGER_PENDING", "AFTER_MARKET_ORDER_REQ_RECEIVED"]);
    const filter = { status: table.dataset.filterStatus, user: table.dataset.filterUser, symbol: table.dataset.filterSymbol };

    function actionCell(orderId, status) {
      const cell = el("td", { class: "actions" });
      if (LIVE.has(status) && actions) {
        const html = actions.innerHTML.replaceAll("ORDER_ID", encodeURIComponent(orderId));
        cell.innerHTML = html;
      }
      return cell;
    }
    function statusBadge(status) {
      return el("span", { class: "status s-" + status }, status);
    }
    onEntries((entry) => {
      if (entry.type !== "order_update" || !entry.data) return;
      const d = entry.data;
      let row = tbody.querySelector(`tr[data-order="${CSS.escape(d.orderId)}"]`);
      if (!row) {
        if (filter.user || (filter.symbol && filter.symbol !== d.tradingSymbol) || (filter.status && filter.status !== d.orderStatus)) return;
        dropEmpty(tbody);
        row = el("tr", { "data-order": d.orderId, "data-version": 0 },
          el("th", { scope: "row" }, el("code", {}, d.orderId)), el("td", {}, "user #" + entry.userId), el("td", {}, d.tradingSymbol),
          el("td", {}, d.transactionType), el("td", {}, d.orderType), el("td", { class: "num", "data-col": "quantity" }),
          el("td", { class: "num", "data-col": "filledQuantity" }), el("td", { class: "num", "data-col": "averagePrice" }),
          el("td", { "data-col": "orderStatus" }), el("td", { class: "num", "data-col": "version" }), el("td", { class: "actions" }));
        tbody.prepend(row);
        trim(tbody, 200);
      }
      if (Number(d.version) <= Number(row.dataset.version)) return; // an older update arriving late
      row.dataset.version = d.version;
      row.querySelector('[data-col="quantity"]').textContent = d.quantity;
      row.querySelector('[data-col="filledQuantity"]').textContent = d.filledQuantity;
      row.querySelector('[data-col="averagePrice"]').textContent = d.averagePrice;
      row.querySelector('[data-col="orderStatus"]').replaceChildren(statusBadge(d.orderStatus));
      row.querySelector('[data-col="version"]').textContent = d.version;
      const wasLive = !!row.querySelector(".actions form");
      if (wasLive !== LIVE.has(d.orderStatus) || !row.querySelector(".actions").children.length) {
        row.querySelector(".actions").replaceWith(actionCell(d.orderId, d.orderStatus));
      }
      flash(row);
    });
  }

  // ---- notifications ----------------------------------------------------------------------
  function notifications() {
    const tbody = document.querySelector("#notifications tbody");
    if (!tbody) return;
    onEntries((entry) => {
      const d = entry.data;
      if (!d) return;
      if (entry.type === "in_app_notification") {
        if (tbody.querySelector(`tr[data-notification="${d.id}"]`)) return;
        dropEmpty(tbody);
        const row = el("tr", { "data-notification": d.id },
          el("th", { scope: "row" }, d.id), el("td", {}, "user #" + d.userId), el("td", {}, d.title), el("td", {}, d.type),
          el("td", {}, d.category), el("td", { class: "deliveries" }, el("span", { class: "badge d-pending", "data-method": "in_app" }, "in_app: pending")),
          el("td", {}, el("time", { datetime: d.createdAt }, clock(d.createdAt))));
        tbody.prepend(row);
        trim(tbody, 200);
        flash(row);
      } else if (entry.type === "notification_status_update") {
        const row = tbody.querySelector(`tr[data-notification="${d.id}"]`);
        if (!row) return;
        const cells = row.querySelector(".deliveries");
        const method = d.status === "read" ? "read" : d.deliveryMethod;
        let badge = cells.querySelector(`[data-method="${method}"]`);
        if (!badge) {
          badge = el("span", { "data-method": method });
          cells.append(" ", badge);
        }
        badge.className = "badge d-" + d.status;
        badge.textContent = method === "read" ? "read" : `${method}: ${d.status}`;
        if (d.error) badge.title = d.error;
        flash(row);
      }
    });
  }

  // ---- system notices ---------------------------------------------------------------------
  function system() {
    const tbody = document.querySelector("#in-force tbody");
    const recent = document.getElementById("recent-notices");
    if (!tbody) return;
    onEntries((entry) => {
      if (entry.type !== "server_maintenance" && entry.type !== "service_status_update") return;
      const d = entry.data;
      const existing = tbody.querySelector(`tr[data-notice="${d.id}"]`);
      const label =
        entry.type === "server_maintenance"
          ? [el("span", { class: "badge warn" }, "maintenance " + d.status), ` ${clock(d.startTime)}–${clock(d.endTime)} UTC: ${d.message}`]
          : [el("span", { class: "badge " + (d.status === "down" ? "bad" : d.status === "degraded" ? "warn" : "ok") }, `${d.service} ${d.status}`), " " + d.message];
      if (d.status === "ended" || d.status === "operational") {
        if (existing) existing.remove();
        if (!tbody.children.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 4 }, "No notice in force.")));
        dropEmpty(recent);
        recent.prepend(el("li", { "data-notice": d.id }, `#${d.id} `, ...label, el("span", { class: "muted" }, " ended")));
        return;
      }
      const row = el("tr", { "data-notice": d.id }, el("th", { scope: "row" }, d.id), el("td", {}, ...label),
        el("td", {}, el("time", {}, clock(d.updatedAt || d.startTime))),
        el("td", {}, ...(tbody.hasAttribute("data-can-end") ? [postButton(`/panel/system/${encodeURIComponent(d.id)}/end`, "End now", "small danger")] : [])));
      dropEmpty(tbody);
      if (existing) existing.replaceWith(row);
      else tbody.prepend(row);
      flash(row);
    });
  }

  // ---- one user's sockets -----------------------------------------------------------------
  function users() {
    const table = document.getElementById("connections");
    if (!table) return;
    async function refresh() {
      try {
        const response = await fetch(table.dataset.url, { credentials: "same-origin" });
        const result = await response.json();
        for (const [endpoint, n] of Object.entries(result.connections)) {
          const cell = table.querySelector(`[data-endpoint="${endpoint}"]`);
          if (cell && cell.textContent !== String(n)) {
            cell.textContent = n;
            flash(cell);
          }
        }
      } catch (err) {
        console.warn(err);
      }
    }
    setInterval(refresh, 3000);
  }

  // ---- market and margin guard ------------------------------------------------------------
  function market() {
    const tbody = document.querySelector("#market tbody");
    for (const row of tbody ? tbody.querySelectorAll("tr[data-symbol]") : []) client.subscribe("market:" + row.dataset.symbol);
    listen("market_data_update", (msg) => {
      const d = msg.data;
      const row = tbody && tbody.querySelector(`tr[data-symbol="${CSS.escape(d.symbol)}"]`);
      if (!row) return;
      for (const col of ["price", "volume", "high24h", "low24h"]) row.querySelector(`[data-col="${col}"]`).textContent = d[col];
      const change = row.querySelector('[data-col="changePercent"]');
      change.textContent = Number(d.changePercent).toFixed(2);
      change.className = "num " + (d.changePercent < 0 ? "down" : d.changePercent > 0 ? "up" : "");
      row.querySelector('[data-col="timestamp"]').replaceChildren(el("time", { datetime: d.timestamp }, clock(d.timestamp)));
      flash(row);
    });
    const guard = document.getElementById("guard");
    onEntries((entry) => {
      if (!guard) return;
      if (entry.type !== "margin_guard_execution" && entry.type !== "auto_close_execution") return;
      dropEmpty(guard);
      const d = entry.data || {};
      const what = entry.type === "margin_guard_execution"
        ? `${(d.summary || {}).positionsAtRisk ?? "?"} of ${(d.summary || {}).positionsChecked ?? "?"} position(s) at risk · ${d.trigger || ""}`
        : `auto-close of ${(d.position || {}).symbol || ""} filled, pnl ${(d.position || {}).pnl ?? ""}`;
      guard.prepend(el("li", {}, el("span", { class: "badge warn" }, d.action || entry.type), ` user #${entry.userId} · ${what}`));
      trim(guard, 50);
    });
  }

  const pages = { dashboard, events, orders, notifications, system, users, market };
  if (pages[body.dataset.page]) pages[body.dataset.page]();
  client.connect();
  // Leaving the page closes its socket at once (the server's counts follow), bfcache or not.
  window.addEventListener("pagehide", () => client.disconnect());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) client.connect();
  });
  window.axisorPanel = client;
})();
