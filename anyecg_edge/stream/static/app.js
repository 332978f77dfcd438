// AnyECG-Edge live dashboard: one WebSocket from the device running `stream --serve`,
// no libraries. State the page shows is also put on data-* attributes (the browser test
// reads them).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const canvas = $("ecg");
  let meta = null;
  let history = 10;
  // ECG kept for drawing: parallel arrays of stream time (s), mV, segment, display rate.
  let ts = [], ys = [], segs = [], fss = [];
  let tLast = -Infinity;
  let windows = 0;
  let ended = false;
  let dirty = true;
  let frames = 0;
  let retryMs = 1000;
  let hrDevice = null;
  let hrEcg = null;

  function fmt(v, d) { return v === null || v === undefined || !isFinite(v) ? "\u2013" : Number(v).toFixed(d); }
  function setText(id, text) { const el = $(id); if (el.textContent !== text) el.textContent = text; }

  function setLink(text, cls) {
    setText("link", text);
    $("link-dot").className = "dot " + (cls || "");
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/ws");
    body.dataset.ws = "connecting";
    ws.onopen = () => { body.dataset.ws = "open"; retryMs = 1000; };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      handle(msg);
    };
    ws.onclose = () => {
      body.dataset.ws = "closed";
      if (!ended) setLink("disconnected: retrying", "bad");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  function handle(msg) {
    switch (msg.type) {
      case "hello": return onHello(msg);
      case "ecg": return onEcg(msg.chunks);
      case "window": return onWindow(msg);
      case "event": return onEvent(msg, true);
      case "events": msg.events.forEach((e) => onEvent(e, false)); return renderEvents();
      case "status": return onStatus(msg);
      case "end": return onEnd(msg);
    }
  }

  function onHello(m) {
    meta = m;
    history = m.history_s || 10;
    ts = []; ys = []; segs = []; fss = []; tLast = -Infinity; windows = 0; ended = false;
    events.length = 0;
    setText("source", "source: " + m.source + (m.model ? "  \u00b7  model: " + m.model : ""));
    if (m.disclaimer) setText("disclaimer", m.disclaimer);
    setText("iv-level", m.interval_level ? "(" + Math.round(m.interval_level * 100) + " %)" : "");
    buildLabs(m.labs);
    renderEvents();
  }

  function onEcg(chunks) {
    for (const c of chunks) {
      const dt = 1 / c.fs;
      for (let i = 0; i < c.y.length; i++) {
        const t = c.t0 + i * dt;
        if (t <= tLast) continue; // already have it (a snapshot overlaps the live feed)
        ts.push(t); ys.push(c.y[i]); segs.push(c.seg); fss.push(c.fs);
        tLast = t;
      }
    }
    // Keep the last `history` seconds (plus a little for the left edge).
    let cut = 0;
    while (cut < ts.length && ts[cut] < tLast - history - 0.5) cut++;
    if (cut > 0) { ts.splice(0, cut); ys.splice(0, cut); segs.splice(0, cut); fss.splice(0, cut); }
    body.dataset.ecgSamples = String(ts.length);
    canvas.dataset.tLast = tLast.toFixed(3);
    setText("ecg-info", "t = " + tLast.toFixed(1) + " s \u00b7 " + fmt(fss[fss.length - 1], 0) + " Hz shown");
    dirty = true;
  }

  function onWindow(w) {
    windows += 1;
    body.dataset.windows = String(windows);
    body.dataset.lastWindowT = String(w.t);
    const q = w.quality || {};
    const qe = $("quality");
    qe.textContent = q.ok ? "good" : "rejected";
    qe.className = "value " + (q.ok ? "good" : "bad");
    setText("quality-why", q.ok ? "window ending t = " + fmt(w.t, 1) + " s" : (q.reasons || []).join(", "));
    hrEcg = q.heart_rate_bpm;
    showHr();
    setText("lat", fmt(w.latency_ms, 1));
    if (w.labs) updateLabs(w.labs, w.t);
  }

  // The device's Heart Rate service when it has one (H10), else the ECG window's estimate.
  function showHr() {
    const dev = hrDevice && hrDevice.hr_bpm;
    if (dev !== undefined && dev !== null) {
      const rr = hrDevice.rr_ms && hrDevice.rr_ms.length ? " \u00b7 RR " + fmt(hrDevice.rr_ms[hrDevice.rr_ms.length - 1], 0) + " ms" : "";
      setText("hr", fmt(dev, 0));
      setText("hr-src", "device" + rr + (hrEcg != null ? " \u00b7 ECG " + fmt(hrEcg, 0) : ""));
      body.dataset.hrDevice = String(dev);
    } else {
      setText("hr", fmt(hrEcg, 0));
      setText("hr-src", "from the ECG window");
    }
  }

  function buildLabs(labs) {
    const tb = $("labs-body");
    tb.textContent = "";
    for (const l of labs) {
      const tr = document.createElement("tr");
      tr.id = "lab-" + l.lab;
      tr.dataset.lab = l.lab;
      tr.dataset.p = "";
      const name = l.display_name && l.display_name !== l.lab ? l.display_name : l.lab;
      // (styles set through the DOM: the page's CSP refuses inline style attributes)
      const thr = l.threshold != null ? '<div class="thr"></div>' : "";
      tr.innerHTML =
        '<td class="lab"></td><td class="num p">\u2013</td>' +
        '<td class="bar"><div class="pbar"><div class="fill"></div><div class="iv" hidden></div>' + thr +
        '</div><div class="ivtext"></div></td><td class="flag nc">waiting</td>';
      tr.querySelector(".lab").textContent = name;
      const tick = tr.querySelector(".thr");
      if (tick) tick.style.left = "calc(" + (l.threshold * 100) + "% - 1px)";
      tr.querySelector(".fill").style.width = "0";
      if (l.unit) {
        const u = document.createElement("span");
        u.className = "unit";
        u.textContent = l.unit;
        tr.querySelector(".lab").appendChild(u);
      }
      tb.appendChild(tr);
    }
  }

  function updateLabs(labs, t) {
    const byName = {};
    for (const l of (meta ? meta.labs : [])) byName[l.lab] = l;
    for (const [lab, e] of Object.entries(labs)) {
      const tr = document.getElementById("lab-" + lab);
      if (!tr) continue;
      tr.dataset.p = String(e.probability);
      tr.dataset.status = e.status;
      tr.querySelector(".p").textContent = fmt(e.probability, 3);
      tr.querySelector(".fill").style.width = (e.probability * 100).toFixed(1) + "%";
      const iv = tr.querySelector(".iv");
      const thr = byName[lab] && byName[lab].threshold;
      let text = "";
      if (e.interval) {
        iv.hidden = false;
        iv.style.left = (e.interval[0] * 100) + "%";
        iv.style.width = Math.max(0.5, (e.interval[1] - e.interval[0]) * 100) + "%";
        text = fmt(e.interval[0], 2) + "\u2013" + fmt(e.interval[1], 2);
      } else {
        iv.hidden = true;
        text = "no interval";
      }
      if (thr != null) text += " \u00b7 thr " + fmt(thr, 2);
      tr.querySelector(".ivtext").textContent = text;
      const f = tr.querySelector(".flag");
      if (e.abnormal === null || e.abnormal === undefined) { f.textContent = e.status || "not calibrated"; f.className = "flag nc"; }
      else if (e.abnormal) { f.textContent = "ABNORMAL"; f.className = "flag abnormal"; }
      else { f.textContent = "normal"; f.className = "flag normal"; }
    }
    setText("labs-t", "at t = " + fmt(t, 1) + " s");
  }

  const events = [];
  const BAD = new Set(["gap", "disconnect", "error", "drop", "gave_up", "connect_failed", "lead_off"]);
  const WARN = new Set(["reconnect", "silence", "clock_jump", "stall", "late", "duplicate"]);

  function onEvent(e, render) {
    if (e.event === "heart_rate") { hrDevice = e; showHr(); return; }
    if (e.battery_pct !== undefined && e.battery_pct !== null) setText("battery", "battery " + e.battery_pct + " %");
    events.push(e);
    if (events.length > 30) events.shift();
    if (render) renderEvents();
  }

  function renderEvents() {
    const ol = $("events");
    ol.textContent = "";
    setText("events-n", String(events.length));
    body.dataset.events = String(events.length);
    if (!events.length) {
      ol.innerHTML = '<li class="muted">no events</li>';
      return;
    }
    for (let i = events.length - 1; i >= 0; i--) {
      const e = events[i];
      const li = document.createElement("li");
      const k = document.createElement("span");
      k.className = "kind " + (BAD.has(e.event) ? "bad" : WARN.has(e.event) ? "warn" : "");
      k.textContent = e.event;
      const details = Object.entries(e).filter(([key]) => !["type", "event", "t", "t_utc"].includes(key))
        .map(([key, v]) => key + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(", ");
      li.append((typeof e.t === "number" ? e.t.toFixed(1) + " s  " : ""), k, details ? ": " + details : "");
      ol.appendChild(li);
    }
  }

  function onStatus(s) {
    if (!ended) {
      const link = s.link || "?";
      setLink(link, link === "streaming" ? "ok" : link === "starting" ? "" : "warn");
    }
    const c = s.counts || {};
    setText("windows", String(c.windows ?? windows));
    const parts = [];
    if (c.accepted !== undefined) parts.push(c.accepted + " used", c.rejected + " rejected");
    if (c.dropped) parts.push(c.dropped + " dropped");
    if (c.skipped_gap) parts.push(c.skipped_gap + " skipped at gaps");
    setText("counts", parts.join(", "));
    const lat = s.latency_ms || {};
    setText("lat-pct", lat.n ? "p50 " + fmt(lat.p50, 1) + " \u00b7 p99 " + fmt(lat.p99, 1) + " ms" : "");
    if (s.hr_device) { hrDevice = s.hr_device; showHr(); }
    if (s.stream_s != null) setText("stream-s", fmt(s.stream_s, 1) + " s of signal");
  }

  function onEnd(m) {
    ended = true;
    const s = m.summary || {};
    setLink("stream ended" + (s.interrupted ? " (interrupted)" : ""), "");
    body.dataset.ended = "1";
  }

  // --- drawing: the last `history` seconds, right edge = newest sample ---------------------
  function draw() {
    requestAnimationFrame(draw);
    if (!dirty) return;
    dirty = false;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, w, h);
    const t1 = isFinite(tLast) ? tLast : history;
    const t0 = t1 - history;
    // Vertical range: robust, at least 2 mV, so a flat line does not look like noise.
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < ys.length; i++) {
      const y = ys[i];
      if (y === null || ts[i] < t0) continue;
      if (y < lo) lo = y;
      if (y > hi) hi = y;
    }
    if (!isFinite(lo)) { lo = -1; hi = 1; }
    const mid = (lo + hi) / 2;
    const span = Math.max(2, (hi - lo) * 1.15);
    lo = mid - span / 2; hi = mid + span / 2;
    const X = (t) => ((t - t0) / history) * w;
    const Y = (v) => h - ((v - lo) / (hi - lo)) * h;
    // Paper grid: 0.2 s and 0.5 mV.
    g.lineWidth = 1;
    g.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--grid") || "#f3c6c6";
    g.beginPath();
    for (let t = Math.ceil(t0 / 0.2) * 0.2; t < t1; t += 0.2) { const x = Math.round(X(t)) + 0.5; g.moveTo(x, 0); g.lineTo(x, h); }
    for (let v = Math.ceil(lo / 0.5) * 0.5; v < hi; v += 0.5) { const y = Math.round(Y(v)) + 0.5; g.moveTo(0, y); g.lineTo(w, y); }
    g.stroke();
    // Trace, broken at gaps and segment changes.
    g.strokeStyle = "#0b5cad";
    g.lineWidth = 1.5 * dpr;
    g.beginPath();
    let pen = false, n = 0;
    for (let i = 0; i < ts.length; i++) {
      if (ts[i] < t0 || ys[i] === null) { pen = false; continue; }
      const gap = i > 0 && (segs[i] !== segs[i - 1] || ts[i] - ts[i - 1] > 3 / fss[i]);
      const x = X(ts[i]), y = Y(ys[i]);
      if (!pen || gap) g.moveTo(x, y); else g.lineTo(x, y);
      pen = true;
      n++;
    }
    g.stroke();
    g.fillStyle = "#6b7280";
    g.font = 11 * dpr + "px system-ui, sans-serif";
    g.fillText(fmt(hi - lo, 1) + " mV", 4 * dpr, 12 * dpr);
    frames += 1;
    body.dataset.frames = String(frames);
    canvas.dataset.drawn = String(n);
  }

  requestAnimationFrame(draw);
  connect();
})();
