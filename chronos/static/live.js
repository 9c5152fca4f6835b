/* Chronos live updates: one websocket per page to <body data-live-url>, reconnected forever.

   - #live-status shows the link: data-state "connecting", "live", "reconnecting" or "offline".
   - Every message but pings is re-dispatched on document as a CustomEvent "chronos:event"
     whose detail is the parsed message: {type: "hello"} on each (re)connect (events may
     have been missed while disconnected), {type: "execution"|"trigger"|"job", data: {...}},
     {type: "lagging", dropped: n} when the server had to drop events for this page.
       document.addEventListener("chronos:event", (e) => { if (e.detail.type === "job") ... });
   - Each <tbody data-live-prepend="execution"> gets a row per execution event, newest first,
     at most 50 rows; a row for an execution already shown is replaced in place. The row is a
     clone of <template id="live-execution-row"> when the page has one: its [data-field]
     elements get execId, jobId, status, startedAt and finishedAt (local times), durationMs
     and exitCode, times and durations written as the server writes them;
     [data-field="status"] also gets the class status-<status>; a[data-href-exec] links to
     /executions/<execId> and a[data-href-job] to /jobs/<jobId>.
   - A <section data-kpi-url> (the overview's figures) is refetched from that summary API after
     execution, job and lagging events and on each reconnect, at most once every 5 s; its
     [data-kpi] elements get jobs, jobs-enabled, runs, failed, success-rate, avg and p95 of
     the last 24 hours, written as the server writes them.
   - The browser's time zone goes into the "tz" cookie, so pages render local times.
   The server pings every 20 s; 60 s without any message means the link is dead. */
(function () {
  "use strict";

  var SILENCE_MS = 60000;
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;
  var OFFLINE_AFTER = 4; // failed attempts in a row before showing "offline"
  var MAX_ROWS = 50;
  var KPI_EVERY_MS = 5000;
  var LABELS = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "reconnecting…",
    offline: "offline"
  };

  function rememberTimeZone() {
    try {
      var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (!tz) return;
      var current = document.cookie.split("; ").filter(function (c) {
        return c.indexOf("tz=") === 0;
      })[0];
      if (current !== "tz=" + encodeURIComponent(tz)) {
        document.cookie = "tz=" + encodeURIComponent(tz) +
          "; path=/; max-age=31536000; samesite=lax";
      }
    } catch (e) { /* an old browser: pages stay in UTC */ }
  }

  function setStatus(state, detail) {
    var el = document.getElementById("live-status");
    if (!el || el.getAttribute("data-state") === state) return;
    el.setAttribute("data-state", state);
    el.textContent = LABELS[state] || state;
    el.title = detail || "";
  }

  /* ---- rendering execution rows ---- */

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  /* As the server writes times (chronos.formatting.local_time): "2026-11-28 18:00:05 CET",
     so that live rows match the rendered ones (the server uses this browser's zone too). */
  function localTime(value) {
    if (value === null || value === undefined || value === "") return "";
    var date = new Date(typeof value === "number" ? value : String(value));
    if (isNaN(date.getTime())) return String(value);
    var zone = "";
    try {
      zone = new Intl.DateTimeFormat("en-GB", { timeZoneName: "short" }).formatToParts(date)
        .filter(function (p) { return p.type === "timeZoneName"; })
        .map(function (p) { return p.value; })[0] || "";
    } catch (e) { /* an old browser: no zone name */ }
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" +
      pad(date.getSeconds()) + (zone ? " " + zone : "");
  }

  /* As chronos.formatting.duration: "350 ms", "4.2 s", "3 min 05 s", "2 h 04 min". */
  function duration(ms) {
    if (ms === null || ms === undefined || ms === "") return "–";
    ms = Number(ms);
    if (!isFinite(ms)) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    var s = Math.floor(ms / 1000);
    if (s < 3600) return Math.floor(s / 60) + " min " + pad(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + pad(Math.floor((s % 3600) / 60)) + " min";
  }

  /* As chronos.formatting.percent: "97.5 %". */
  function percent(value) {
    if (value === null || value === undefined) return "–";
    return (Number(value) * 100).toFixed(1) + " %";
  }

  function fieldText(name, data) {
    var value = data[name];
    if (name === "startedAt" || name === "finishedAt") return localTime(value);
    if (name === "durationMs") return duration(value);
    return value === null || value === undefined ? "" : String(value);
  }

  function cssToken(value) {
    return String(value || "").toLowerCase().replace(/[^a-z0-9_-]/g, "");
  }

  function defaultRow(data) {
    var tr = document.createElement("tr");
    ["startedAt", "jobId", "status", "durationMs", "execId"].forEach(function (name) {
      var td = document.createElement("td");
      var inner = td;
      if (name === "execId") {
        inner = document.createElement("a");
        inner.setAttribute("data-href-exec", "");
        td.appendChild(inner);
      } else if (name === "status") {
        inner = document.createElement("span");
        inner.className = "badge";
        td.appendChild(inner);
      }
      inner.setAttribute("data-field", name);
      tr.appendChild(td);
    });
    return tr;
  }

  function buildRow(data) {
    var template = document.getElementById("live-execution-row");
    var row = null;
    if (template && template.content) {
      row = template.content.firstElementChild;
      row = row ? row.cloneNode(true) : null;
    }
    if (!row) row = defaultRow(data);
    var fields = row.querySelectorAll("[data-field]");
    if (row.hasAttribute("data-field")) fields = [row].concat(Array.prototype.slice.call(fields));
    Array.prototype.forEach.call(fields, function (el) {
      var name = el.getAttribute("data-field");
      el.textContent = fieldText(name, data);
      if (name === "status" && data.status) el.classList.add("status-" + cssToken(data.status));
      if (name === "startedAt" && el.tagName === "TIME" && data.startedAt != null) {
        var d = new Date(data.startedAt);
        if (!isNaN(d.getTime())) el.setAttribute("datetime", d.toISOString());
      }
    });
    var root = document.body.getAttribute("data-root") || "";
    Array.prototype.forEach.call(row.querySelectorAll("a[data-href-exec]"), function (a) {
      a.href = root + "/executions/" + encodeURIComponent(data.execId);
    });
    Array.prototype.forEach.call(row.querySelectorAll("a[data-href-job]"), function (a) {
      a.href = root + "/jobs/" + encodeURIComponent(data.jobId);
    });
    row.setAttribute("data-exec-id", String(data.execId));
    row.classList.add("live-new");
    return row;
  }

  function prependExecution(data) {
    if (!data || data.execId === undefined || data.execId === null) return;
    var bodies = document.querySelectorAll('tbody[data-live-prepend="execution"]');
    Array.prototype.forEach.call(bodies, function (tbody) {
      Array.prototype.forEach.call(tbody.querySelectorAll("tr.empty"), function (tr) {
        tr.remove();
      });
      var row = buildRow(data);
      var existing = Array.prototype.filter.call(tbody.rows, function (tr) {
        return tr.getAttribute("data-exec-id") === String(data.execId);
      })[0];
      if (existing) {
        tbody.replaceChild(row, existing);
      } else {
        tbody.insertBefore(row, tbody.firstChild);
      }
      while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
    });
  }

  /* ---- the connection ---- */

  // A job registered or changed elsewhere: say so on pages that list jobs
  // (elements with data-live-notice), rather than reshuffling the list under the reader.
  function noteJobChange(data) {
    if (!data || !data.jobId) return;
    var what = data.outcome === "created" ? "was registered" : "changed";
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-notice]"), function (el) {
      el.textContent = "Job " + data.jobId + " " + what + "; reload to see it.";
      el.hidden = false;
    });
  }

  /* A function that refetches the section's figures: at once when the last fetch is over
     KPI_EVERY_MS old, else once when it will be, however many events come meanwhile. */
  function kpiRefresher(section) {
    var url = section.getAttribute("data-kpi-url");
    var timer = null;
    var last = 0;

    function set(name, text) {
      var el = section.querySelector('[data-kpi="' + name + '"]');
      if (el) el.textContent = text;
    }

    function show(summary) {
      var day = summary.last24h;
      set("jobs", String(summary.jobs.total));
      set("jobs-enabled", summary.jobs.enabled + " active");
      set("runs", String(day.runs));
      set("failed", day.failure + " failed");
      set("success-rate", percent(day.successRate));
      set("avg", duration(day.avgDuration));
      set("p95", duration(day.p95));
    }

    function fetchNow() {
      timer = null;
      last = Date.now();
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (body) { if (body && body.data) show(body.data); })
        .catch(function () { /* the next event or reconnect tries again */ });
    }

    return function () {
      if (timer !== null) return;
      timer = window.setTimeout(fetchNow, Math.max(0, last + KPI_EVERY_MS - Date.now()));
    };
  }

  function watchKpis() {
    var section = document.querySelector("section[data-kpi-url]");
    if (!section || !("fetch" in window)) return;
    var refresh = kpiRefresher(section);
    var hellos = 0;
    document.addEventListener("chronos:event", function (event) {
      var message = event.detail;
      if (message.type === "hello") {
        hellos += 1;
        if (hellos > 1) refresh(); // events may have been missed while disconnected
      } else if (message.type === "execution" || message.type === "job" ||
                 message.type === "lagging") {
        refresh();
      }
    });
  }

  function start(liveUrl) {
    var url = new URL(liveUrl, window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    var socket = null;
    var failures = 0;
    var lastMessage = 0;
    var retryTimer = null;
    var everLive = false;

    function scheduleReconnect() {
      if (retryTimer !== null) return;
      failures += 1;
      var cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, failures - 1));
      var delay = cap / 2 + Math.random() * cap / 2; // jitter: workers restart together
      var offline = failures >= OFFLINE_AFTER || navigator.onLine === false;
      setStatus(offline ? "offline" : (everLive ? "reconnecting" : "connecting"),
        "next attempt in " + Math.round(delay / 1000) + " s");
      retryTimer = window.setTimeout(function () {
        retryTimer = null;
        connect();
      }, delay);
    }

    function drop(ws) {
      if (ws !== socket) return; // an old socket's late event
      socket = null;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(); } catch (e) { /* already closed */ }
      scheduleReconnect();
    }

    function connect() {
      var ws;
      try {
        ws = new WebSocket(url.toString());
      } catch (e) {
        scheduleReconnect();
        return;
      }
      socket = ws;
      lastMessage = Date.now();
      ws.onmessage = function (event) {
        lastMessage = Date.now();
        var message;
        try { message = JSON.parse(event.data); } catch (e) { return; }
        if (!message || typeof message !== "object") return;
        if (message.type === "ping") return; // a heartbeat; nothing to answer
        if (message.type === "hello") {
          failures = 0;
          everLive = true;
          setStatus("live", "");
        } else if (message.type === "error") {
          setStatus("offline", message.error || "refused");
        }
        if (message.type === "execution") prependExecution(message.data);
        if (message.type === "job") noteJobChange(message.data);
        document.dispatchEvent(new CustomEvent("chronos:event", { detail: message }));
      };
      ws.onclose = function (event) {
        if (event.code === 4401 || event.code === 4403) {
          failures = Math.max(failures, OFFLINE_AFTER); // logged out: keep trying, slowly
        }
        drop(ws);
      };
      ws.onerror = function () { drop(ws); };
    }

    window.setInterval(function () {
      if (socket && Date.now() - lastMessage > SILENCE_MS) drop(socket);
    }, 5000);
    window.addEventListener("online", function () {
      if (retryTimer !== null) {
        window.clearTimeout(retryTimer);
        retryTimer = null;
        failures = 0;
        connect();
      }
    });
    window.addEventListener("offline", function () {
      if (!socket) setStatus("offline", "the browser is offline");
    });
    connect();
  }

  function init() {
    rememberTimeZone();
    watchKpis();
    var liveUrl = document.body && document.body.getAttribute("data-live-url");
    if (liveUrl && "WebSocket" in window) start(liveUrl);
    else setStatus("offline", "live updates are not available");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
