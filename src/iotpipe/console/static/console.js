// iotpipe console: one page, a view per hash route (#/fleet, #/device/<id>, #/anomalies, #/health, #/sql).
// Everything comes from the console's own JSON API (same origin, the cookie set by the token URL); no inline script.
"use strict";

(function () {
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  const state = { about: null, fleet: null, sort: { key: "deviceId", dir: 1 }, filter: "", stateFilter: "",
                  anomalies: [], device: null, charts: [], source: null, view: "" };
  window.consoleTimings = [];

  const STATE_LABEL = { online: "● online", stale: "◐ stale", offline: "○ offline", unknown: "? unknown" };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(value) { return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]); }

  function fmtTime(ms) { return ms === null || ms === undefined ? "never" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }
  function fmtAgo(seconds) {
    if (seconds === null || seconds === undefined) return "no reading";
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }
  const NUMBER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 3 });  // made once: a row has two numbers
  function fmtNum(value) { return value === null || value === undefined ? "–" : NUMBER.format(Number(value)); }

  // A view is marked drawn only while it is still the one shown (a slow answer of the view left must not mark it).
  function markReady(view) { if (state.view === view) main.dataset.ready = view; }

  function problem(message) { return el("p", { class: "problem", role: "alert", text: message }); }

  function setView(title, ...content) {
    for (const chart of state.charts) chart.destroy();
    state.charts = [];
    main.replaceChildren(el("h2", { text: title }), ...content);
    document.title = `${title} · iotpipe console`;
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.view === state.view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  // -- fleet ------------------------------------------------------------------------------------------------------
  const COLUMNS = [
    ["deviceId", "Device"], ["state", "State"], ["lastSeen", "Last seen"], ["silentFor", "Silent for"],
    ["readingsLastHour", "Readings (1 h)"], ["openAnomalies", "Open anomalies"], ["certificate", "Certificate"],
  ];

  function fleetRows() {
    const devices = (state.fleet && state.fleet.devices) || [];
    const text = state.filter.toLowerCase();
    const { key, dir } = state.sort;
    return devices
      .filter((d) => (!text || d.deviceId.toLowerCase().includes(text)) && (!state.stateFilter || d.state === state.stateFilter))
      .sort((a, b) => {
        const x = a[key], y = b[key];
        if (x === y) return a.deviceId < b.deviceId ? -1 : 1;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * dir;
      });
  }

  // A large fleet is windowed: only the rows in view (and a margin) are in the DOM, two spacer rows keep the
  // table's full height, so every row is reachable by scrolling, the filter and the sort; laying out a thousand
  // rows was ~0.3 s of the first render. A small fleet is written whole.
  const WINDOW_FROM = 200;   // rows: below this every row is written
  const MARGIN = 30;         // rows written above and below the view
  const fleetView = { rows: [], start: 0, end: 0, rowH: 0, frame: 0 };

  function rowMarkup(d, index) {
    return `<tr class="state-${esc(d.state)}" data-device="${esc(d.deviceId)}" aria-rowindex="${index + 2}">` +
      `<th scope="row"><a href="#/device/${esc(encodeURIComponent(d.deviceId))}">${esc(d.deviceId)}</a></th>` +
      `<td class="state" data-state="${esc(d.state)}">${esc(STATE_LABEL[d.state] || d.state)}</td>` +
      `<td>${esc(fmtTime(d.lastSeen))}</td><td>${esc(fmtAgo(d.silentFor))}</td>` +
      `<td class="num">${esc(fmtNum(d.readingsLastHour))}</td><td class="num">${esc(fmtNum(d.openAnomalies))}</td>` +
      `<td>${esc(d.registered ? d.certificate : "not registered")}</td></tr>`;
  }

  function spacer(rows) {
    return rows > 0 ? `<tr class="spacer" aria-hidden="true" data-rows="${rows}"><td colspan="${COLUMNS.length}"></td></tr>` : "";
  }

  // Which rows the view needs: from where the table's body is against the viewport.
  function wantedWindow(body) {
    const total = fleetView.rows.length;
    if (total < WINDOW_FROM) return [0, total];
    const rowH = fleetView.rowH || 30;
    const top = body.getBoundingClientRect().top;
    const first = Math.floor(-top / rowH);
    const shown = Math.ceil(window.innerHeight / rowH);
    const start = Math.max(0, Math.min(total, first) - MARGIN);
    return [start, Math.min(total, Math.max(first, 0) + shown + MARGIN)];
  }

  function writeWindow(body, start, end) {
    // one DOM write: the rows' markup parsed at once is several times faster than rows of nodes built one by
    // one (every value escaped; the page's CSP allows no script in it anyway)
    const focused = document.activeElement && body.contains(document.activeElement)
      ? document.activeElement.closest("tr[data-device]").dataset.device : null;
    const rows = fleetView.rows;
    body.innerHTML = spacer(start) + rows.slice(start, end).map((d, i) => rowMarkup(d, start + i)).join("") +
      spacer(rows.length - end);
    Object.assign(fleetView, { start, end });
    const first = body.querySelector("tr[data-device]");
    if (first && !fleetView.rowH) fleetView.rowH = first.getBoundingClientRect().height || 30;
    for (const row of body.querySelectorAll("tr.spacer")) {  // CSSOM, not a style attribute: the CSP allows it
      row.firstElementChild.style.height = `${Number(row.dataset.rows) * fleetView.rowH}px`;
    }
    if (focused) {  // the row keyboard focus was on stays focused when the window moves
      const again = [...body.querySelectorAll("tr[data-device]")].find((r) => r.dataset.device === focused);
      if (again) again.querySelector("a").focus({ preventScroll: true });
    }
  }

  function onFleetScroll() {
    if (fleetView.frame) return;
    fleetView.frame = requestAnimationFrame(() => {
      fleetView.frame = 0;
      const body = document.getElementById("fleet-body");
      if (!body || fleetView.rows.length < WINDOW_FROM) return;
      const [start, end] = wantedWindow(body);
      // the margin absorbs small moves: the rows are written again only when the view nears an edge
      if (start < fleetView.start || end > fleetView.end ||
          start - fleetView.start > MARGIN || fleetView.end - end > MARGIN) writeWindow(body, start, end);
    });
  }
  window.addEventListener("scroll", onFleetScroll, { passive: true });
  window.addEventListener("resize", onFleetScroll, { passive: true });

  function renderFleetTable() {
    const body = document.getElementById("fleet-body");
    if (!body) return;
    const rows = fleetRows();
    fleetView.rows = rows;
    const [start, end] = wantedWindow(body);
    writeWindow(body, start, end);
    if (rows.length >= WINDOW_FROM) onFleetScroll();  // the first row's height is known now: check the window
    document.getElementById("fleet").setAttribute("aria-rowcount", String(rows.length + 1));
    const counts = (state.fleet && state.fleet.counts) || {};
    document.getElementById("fleet-count").textContent =
      `${rows.length} of ${(state.fleet && state.fleet.devices.length) || 0} devices shown · ` +
      Object.entries(counts).map(([name, count]) => `${count} ${name}`).join(" · ");
    for (const button of document.querySelectorAll("th[data-key]")) {
      const sorted = button.dataset.key === state.sort.key;
      button.setAttribute("aria-sort", sorted ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
    }
  }

  async function showFleet(asked) {
    const started = asked ? asked.started : performance.now();  // from the request, wherever it was sent
    const filter = el("input", { id: "fleet-filter", type: "search", value: state.filter, placeholder: "press-07",
      oninput: (e) => { state.filter = e.target.value; renderFleetTable(); } });
    const select = el("select", { id: "fleet-state", onchange: (e) => { state.stateFilter = e.target.value; renderFleetTable(); } },
      el("option", { value: "", text: "every state" }),
      ...Object.keys(STATE_LABEL).map((s) => el("option", { value: s, text: STATE_LABEL[s], selected: s === state.stateFilter })));
    const head = el("tr", { "aria-rowindex": "1" }, ...COLUMNS.map(([key, label]) => el("th", { scope: "col", "data-key": key, "aria-sort": "none" },
      el("button", { type: "button", text: label, onclick: () => {
        state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 }; renderFleetTable();
      } }))));
    setView("Fleet",
      el("div", { class: "controls" },
        el("label", { for: "fleet-filter", text: "Filter devices" }), filter,
        el("label", { for: "fleet-state", text: "State" }), select),
      el("p", { class: "legend", text: "online: a reading in the last " + fmtAgo(state.about.staleAfter) +
        " · stale: silent longer (its values are old) · offline: silent over " + fmtAgo(state.about.offlineAfter) +
        " · unknown: no reading stored, nothing known" }),
      el("p", { id: "fleet-count", role: "status" }),
      el("table", { id: "fleet", class: "data" }, el("caption", { text: "Every device, live" }), el("thead", {}, head),
        el("tbody", { id: "fleet-body" })));
    try {
      state.fleet = await (asked ? asked.answer : api("/api/fleet"));
      renderFleetTable();
      window.consoleTimings.push({ what: "fleet", ms: performance.now() - started, rows: state.fleet.devices.length });
      markReady("fleet");
    } catch (err) { if (state.view === "fleet") main.append(problem(`The fleet could not be read: ${err.message}`)); }
  }

  // -- a device ---------------------------------------------------------------------------------------------------
  function chartData(series) {
    const points = new Map();
    series.times.forEach((t, i) => points.set(t, series.values[i]));
    const marks = new Map();
    for (const a of series.anomalies) { const t = a.timestamp / 1000; points.set(t, a.value); marks.set(t, a); }
    const xs = [...points.keys()].sort((a, b) => a - b);
    const line = xs.map((t) => points.get(t));
    const flat = (v) => xs.map(() => (v === null || v === undefined ? null : v));
    const at = (pick) => xs.map((t) => (marks.has(t) ? pick(marks.get(t)) : null));
    return [xs, line, flat(series.min), flat(series.max), at((a) => a.value),
            at((a) => a.expectedLow), at((a) => a.expectedHigh)];
  }

  function drawChart(holder, series, started) {
    const width = Math.max(320, holder.clientWidth || 800);
    const unit = series.unit ? ` (${series.unit})` : "";
    const opts = {
      width, height: 220, title: `${series.sensor}${unit}`,
      scales: { x: { time: true } },
      series: [
        {},
        { label: series.sensor, stroke: "#1f5fa8", width: 1.5, spanGaps: true, points: { show: false } },
        { label: "static min", stroke: "#7a7a7a", dash: [6, 4], width: 1, points: { show: false } },
        { label: "static max", stroke: "#7a7a7a", dash: [6, 4], width: 1, points: { show: false } },
        { label: "anomaly", stroke: "#b3261e", fill: "#b3261e", paths: () => null, points: { show: true, size: 9, fill: "#b3261e" } },
        { label: "expected low", stroke: "#6b4fa0", paths: () => null, points: { show: true, size: 6, fill: "#fff" } },
        { label: "expected high", stroke: "#6b4fa0", paths: () => null, points: { show: true, size: 6, fill: "#fff" } },
      ],
      hooks: { draw: [() => {
        if (!holder.dataset.drawn) {
          holder.dataset.drawn = "true";
          window.consoleTimings.push({ what: "chart", sensor: series.sensor, ms: performance.now() - started,
                                       fromPage: performance.now() - state.deviceStarted,
                                       points: series.points, shown: series.shown });
        }
      }] },
    };
    const chart = new uPlot(opts, chartData(series), holder);
    state.charts.push(chart);
    return chart;
  }

  function sourcesText(series) {
    return series.sources.map((s) => s.source === "archive"
      ? `${fmtTime(s.from)} – ${fmtTime(s.to)} from the SQL archive (${s.engine}; older than the table's ${state.about.ttlDays}-day retention)`
      : `${fmtTime(s.from)} – ${fmtTime(s.to)} from the DynamoDB table`).join("; ");
  }

  async function loadSeries(deviceId, sensor, range, figure) {
    const holder = figure.querySelector(".chart");
    const caption = figure.querySelector("figcaption");
    const started = performance.now();
    try {
      const series = await api(`/api/device/${encodeURIComponent(deviceId)}/series/${encodeURIComponent(sensor)}?range=${range}`);
      holder.replaceChildren();
      holder.dataset.points = series.points;
      holder.dataset.shown = series.shown;
      holder.setAttribute("aria-label", `${sensor} of ${deviceId} over ${range}: ${series.points} readings` +
        (series.anomalies.length ? `, ${series.anomalies.length} anomalies marked` : ", no anomaly"));
      caption.textContent = `${sensor}: ${series.points.toLocaleString("en-US")} readings` +
        (series.shown < series.points ? ` (${series.shown.toLocaleString("en-US")} drawn, downsampled with LTTB)` : "") +
        (series.truncated ? " — the read stopped at its bound" : "") +
        `; static bounds ${fmtNum(series.min)} … ${fmtNum(series.max)}; ${series.anomalies.length} anomalies. ` + sourcesText(series);
      if (series.points === 0) holder.append(el("p", { text: "No reading in this range." }));
      else drawChart(holder, series, started);
    } catch (err) { holder.replaceChildren(problem(`${sensor}: ${err.message}`)); }
  }

  async function showDevice(deviceId, range) {
    state.deviceStarted = performance.now();  // the page's first request: a chart's time from here is "fromPage"
    range = range || "1h";
    const select = el("select", { id: "range", onchange: (e) => { location.hash = `#/device/${encodeURIComponent(deviceId)}/${e.target.value}`; } },
      ...state.about.ranges.map((r) => el("option", { value: r, text: r, selected: r === range })));
    const charts = el("div", { class: "charts" });
    const list = el("ol", { id: "device-anomalies", class: "anomaly-list" });
    setView(`Device ${deviceId}`,
      el("p", {}, el("a", { href: "#/fleet", text: "← back to the fleet" })),
      el("div", { class: "controls" }, el("label", { for: "range", text: "Range" }), select),
      el("div", { class: "device" }, charts,
        el("aside", { "aria-labelledby": "anomalies-heading" }, el("h3", { id: "anomalies-heading", text: "Anomalies in this range" }), list)));
    let info;
    try { info = await api(`/api/device/${encodeURIComponent(deviceId)}?range=${range}`); }
    catch (err) { main.append(problem(err.message)); return; }
    state.device = { id: deviceId, range };
    list.replaceChildren(...(info.anomalies.length ? info.anomalies.map(anomalyItem)
      : [el("li", { text: "None: every reading in range was normal." })]));
    const figures = info.sensors.map((s) => el("figure", { "data-sensor": s.name },
      el("div", { class: "chart", role: "img", "aria-label": `${s.name} chart, loading` }), el("figcaption", { text: `${s.name}: loading…` })));
    charts.replaceChildren(...figures);
    await Promise.all(info.sensors.map((s, i) => loadSeries(deviceId, s.name, range, figures[i])));
    markReady("device");
  }

  // New readings of the device shown: its charts are read again (the fleet event says it sent something).
  function refreshDevice(before) {
    const seen = (fleet) => ((fleet && fleet.devices) || []).find((d) => d.deviceId === state.device.id);
    const now = seen(state.fleet), then = seen(before);
    if (!now || !then || then.lastSeen === now.lastSeen) return;
    for (const chart of state.charts) chart.destroy();
    state.charts = [];
    for (const figure of document.querySelectorAll("figure[data-sensor]")) {
      delete figure.querySelector(".chart").dataset.drawn;
      loadSeries(state.device.id, figure.dataset.sensor, state.device.range, figure);
    }
  }

  function anomalyItem(a) {
    const why = a.rule === "model"
      ? `model: score ${fmtNum(a.score)}, expected ${fmtNum(a.expectedLow)} … ${fmtNum(a.expectedHigh)}`
      : `${a.rule || "bound"}: ${a.reason || "outside the static bounds"}`;
    return el("li", { "data-device": a.deviceId },
      el("strong", { text: `${a.sensorType} ${fmtNum(a.value)}${a.unit ? " " + a.unit : ""}` }),
      ` at ${fmtTime(a.timestamp)} on `, el("a", { href: `#/device/${encodeURIComponent(a.deviceId)}`, text: a.deviceId }),
      el("span", { class: "why", text: ` — ${why}` }));
  }

  // -- anomalies --------------------------------------------------------------------------------------------------
  function renderAnomalies() {
    const body = document.getElementById("anomaly-body");
    if (!body) return;
    const value = (id) => document.getElementById(id).value.trim();
    const [device, sensor, rule] = [value("f-device"), value("f-sensor"), value("f-rule")];
    const rows = state.anomalies.filter((a) => (!device || a.deviceId.includes(device)) && (!sensor || a.sensorType === sensor)
      && (!rule || (a.rule || "bound") === rule));
    body.replaceChildren(...rows.map((a) => el("tr", { "data-device": a.deviceId },
      el("td", { text: fmtTime(a.timestamp) }),
      el("th", { scope: "row" }, el("a", { href: `#/device/${encodeURIComponent(a.deviceId)}`, text: a.deviceId })),
      el("td", { text: a.sensorType }), el("td", { class: "num", text: fmtNum(a.value) }),
      el("td", { text: a.rule || "bound" }), el("td", { text: a.rule === "model"
        ? `score ${fmtNum(a.score)}, expected ${fmtNum(a.expectedLow)} … ${fmtNum(a.expectedHigh)}` : a.reason }))));
    document.getElementById("anomaly-count").textContent = `${rows.length} anomalies (last 24 h, newest first)`;
  }

  async function showAnomalies() {
    const sensors = Object.keys(state.about.sensors);
    const field = (id, label, input) => [el("label", { for: id, text: label }), input];
    setView("Anomalies",
      el("div", { class: "controls" },
        ...field("f-device", "Device", el("input", { id: "f-device", type: "search", oninput: renderAnomalies })),
        ...field("f-sensor", "Sensor", el("select", { id: "f-sensor", onchange: renderAnomalies },
          el("option", { value: "", text: "every sensor" }), ...sensors.map((s) => el("option", { value: s, text: s })))),
        ...field("f-rule", "Rule", el("select", { id: "f-rule", onchange: renderAnomalies },
          el("option", { value: "", text: "every rule" }), el("option", { value: "bound", text: "bound" }),
          el("option", { value: "model", text: "model" })))),
      el("p", { id: "anomaly-count", role: "status" }),
      el("table", { id: "anomalies", class: "data" }, el("caption", { text: "Anomalies across the fleet, live" }),
        el("thead", {}, el("tr", {}, ...["Time", "Device", "Sensor", "Value", "Rule", "Why"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", { id: "anomaly-body" })));
    try {
      state.anomalies = (await api("/api/anomalies")).anomalies;
      renderAnomalies();
      markReady("anomalies");
    } catch (err) { main.append(problem(err.message)); }
  }

  // -- pipeline health --------------------------------------------------------------------------------------------
  function part(title, value, render) {
    const section = el("section", { class: "card", "aria-label": title }, el("h3", { text: title }));
    if (!value.ok) section.append(el("p", { class: "muted", text: `not available: ${value.error}` }));
    else section.append(...render(value.value));
    return section;
  }

  async function showHealth() {
    setView("Pipeline health", el("p", { text: "Reading…" }));
    let h;
    try { h = await api("/api/health"); } catch (err) { main.append(problem(err.message)); return; }
    const total = (m, name) => (m.totals && m.totals[name]) || 0;
    setView("Pipeline health", el("div", { class: "cards" },
      part("Readings per minute (last hour)", h.metrics, (m) => [
        el("p", { class: "big", text: fmtNum(total(m, "SensorReadingsProcessed") / 60) }),
        el("p", { text: `${fmtNum(total(m, "SensorReadingsProcessed"))} processed, ${fmtNum(total(m, "AnomaliesDetected"))} anomalies, ${fmtNum(total(m, "RecordsQuarantined"))} quarantined in the hour` })]),
      part("Iterator age", h.iteratorAge, (v) => [el("p", { class: "big", text: v.latestMs === null ? "no data" : `${fmtNum(v.latestMs / 1000)} s` }),
        el("p", { text: `highest in the hour: ${v.maxMs === null ? "no data" : fmtNum(v.maxMs / 1000) + " s"}` })]),
      part("Failed batches", h.deadLetters, (v) => [el("p", { class: "big", text: fmtNum(v.queued + v.inFlight + v.s3Objects) }),
        el("p", { text: `dead-letter queue depth ${v.queued} (+${v.inFlight} in flight); ${v.s3Objects} in the S3 destination; iotpipe failures list shows them` })]),
      part("Quarantined records (last hour)", h.quarantined, (lines) => [lines.length ? el("ul", {}, ...lines.map((l) =>
        el("li", { text: `${fmtTime(l.timestamp)} ${l.fields.reason || l.message}` }))) : el("p", { text: "none" })]),
      part("Processor errors (last hour)", h.errors, (lines) => [lines.length ? el("ul", {}, ...lines.map((l) =>
        el("li", { text: `${fmtTime(l.timestamp)} ${l.message}` }))) : el("p", { text: "none" })]),
      part("Cost this month (iotpipe cost)", h.cost, (c) => [el("p", { class: "big", text: `$${fmtNum(c.monthlyUsd)}` }),
        el("p", { text: `${c.devices} devices × ${c.sensors} sensors at ${c.rateHz} Hz (observed); $${fmtNum(c.perMillionUsd)} per million readings; ${c.region} prices of ${c.pricesAsOf}` })])));
    markReady("health");
  }

  // -- SQL --------------------------------------------------------------------------------------------------------
  async function showSql() {
    const info = await api("/api/sql").catch((err) => ({ error: err.message }));
    if (info.error) { setView("SQL", problem(info.error)); return; }
    const box = el("textarea", { id: "sql-text", rows: 6, cols: 80, spellcheck: "false" });
    const named = el("select", { id: "sql-named", onchange: (e) => { const q = info.queries.find((x) => x.name === e.target.value); if (q) box.value = q.sql; } },
      el("option", { value: "", text: "pick a named query" }), ...info.queries.map((q) => el("option", { value: q.name, text: `${q.name}: ${q.description}` })));
    const since = el("select", { id: "sql-since" }, ...["1h", "24h", "7d"].map((s) => el("option", { value: s, text: s, selected: s === "24h" })));
    const out = el("div", { id: "sql-result", "aria-live": "polite" });
    const run = el("button", { type: "button", text: "Run", onclick: async () => {
      out.replaceChildren(el("p", { text: "Running…" }));
      try {
        const r = await api("/api/sql", { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify({ query: box.value, since: since.value }) });
        const cost = r.engine === "athena"
          ? `Athena: at most ${fmtNum(r.estimate.bytes / 1e6)} MB ($${r.estimate.usd.toFixed(6)}) before; scanned ${fmtNum(r.bytesScanned / 1e6)} MB, $${r.costUsd.toFixed(6)}`
          : `DuckDB read ${fmtNum(r.bytesScanned / 1e6)} MB of archive, no charge`;
        out.replaceChildren(el("p", { role: "status", text: `${r.rowCount} rows in ${r.seconds.toFixed(2)} s · ${cost}` }),
          el("table", { class: "data" }, el("thead", {}, el("tr", {}, ...r.columns.map((c) => el("th", { scope: "col", text: c })))),
            el("tbody", {}, ...r.rows.map((row) => el("tr", {}, ...row.map((v) => el("td", { text: v === null ? "NULL" : String(v) })))))));
      } catch (err) { out.replaceChildren(problem(err.message)); }
    } });
    setView("SQL", el("p", { text: `Over the raw archive on ${info.engine}, as iotpipe sql runs it (one SELECT).` }),
      el("div", { class: "controls" }, el("label", { for: "sql-named", text: "Named query" }), named,
        el("label", { for: "sql-since", text: "Window" }), since),
      el("label", { for: "sql-text", text: "Query" }), box, el("div", {}, run), out);
    markReady("sql");
  }

  // -- live -------------------------------------------------------------------------------------------------------
  function connect() {
    if (state.source) state.source.close();
    const source = new EventSource("/api/events");
    state.source = source;
    source.addEventListener("open", () => { live.textContent = "live: updates appear without a reload"; });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {  // the browser reconnects by itself
        live.textContent = "live updates paused: reconnecting…";
        return;
      }
      // refused (too many console pages open, or the console restarted): the browser gives up, so we try again
      live.textContent = "live updates stopped (the console refused the stream); trying again in 15 s";
      setTimeout(() => { if (state.source === source) connect(); }, 15000);
    });
    source.addEventListener("fleet", (e) => {
      const before = state.fleet;
      state.fleet = JSON.parse(e.data);
      if (state.view === "fleet") renderFleetTable();
      if (state.view === "device" && state.device) refreshDevice(before);
    });
    source.addEventListener("anomaly", (e) => {
      const a = JSON.parse(e.data);
      const key = `${a.deviceId}|${a.timestamp}|${a.sensorType}`;
      if (state.anomalies.some((x) => `${x.deviceId}|${x.timestamp}|${x.sensorType}` === key)) return;
      state.anomalies.unshift(a);
      live.textContent = `new anomaly: ${a.deviceId} ${a.sensorType} ${fmtNum(a.value)}`;
      if (state.view === "anomalies") renderAnomalies();
      const list = document.getElementById("device-anomalies");
      if (list && state.device && a.deviceId === state.device.id) list.prepend(anomalyItem(a));
    });
  }

  async function route(event) {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const id = (state.routeId = (state.routeId || 0) + 1);
    state.view = ["device", "anomalies", "health", "sql"].includes(parts[0]) && (parts[0] !== "device" || parts[1])
      ? parts[0] : "fleet";
    delete main.dataset.ready;
    // the fleet (the snapshot the console holds) is asked for alongside the page's first question, not after it
    const fleetAsked = state.view === "fleet" ? { started: performance.now(), answer: api("/api/fleet") } : null;
    if (fleetAsked) fleetAsked.answer.catch(() => {});  // its error is shown by showFleet
    if (!state.about) state.about = await api("/api/about");
    if (id !== state.routeId) return;  // another route started meanwhile: it draws its own view
    document.getElementById("env").textContent = `env ${state.about.env}${state.about.local ? " (iotpipe local)" : ""}`;
    if (state.view === "device") await showDevice(parts[1], parts[2]);
    else if (state.view === "anomalies") await showAnomalies();
    else if (state.view === "health") await showHealth();
    else if (state.view === "sql") await showSql();
    else await showFleet(fleetAsked);
    if (event && id === state.routeId) main.focus({ preventScroll: true });  // a new view: focus moves to it
  }

  window.addEventListener("hashchange", route);
  route().then(connect).catch((err) => main.replaceChildren(problem(err.message)));
})();
