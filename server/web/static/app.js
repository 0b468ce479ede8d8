// WardWatch command-center page. Plain ES module, no libraries: everything is served by the server.
// Data: the REST API (/api, bearer token) and live changes over server-sent events.

const API = "api";
const VITALS = [
  ["spo2", "SpO2", "%"],
  ["heart_rate", "Pulse", "/min"],
  ["respiratory_rate", "Resp.", "/min"],
  ["systolic_bp", "Sys. BP", "mmHg"],
  ["body_temperature", "Temp.", "°C"],
];
const CHART_BANDS = {
  spo2: "spo2_scale_1", heart_rate: "pulse", respiratory_rate: "respiration",
  systolic_bp: "systolic_bp", body_temperature: "temperature",
};
const COMPONENT_LABEL = {
  respiration: "RR", spo2: "SpO2", air_or_oxygen: "O2", systolic_bp: "SBP",
  pulse: "HR", consciousness: "ACVPU", temperature: "T",
};
// Default chart ranges per vital; widened to include every value shown.
const CHART_RANGE = {
  spo2: [82, 100], heart_rate: [35, 150], respiratory_rate: [5, 35],
  systolic_bp: [80, 190], body_temperature: [34.5, 40.5], news2: [0, 14],
};
const RISK_LABEL = { high: "High", medium: "Medium", "low-medium": "Low-medium", low: "Low" };
// Staleness windows used for display (the gateway's defaults, docs/scoring.md).
const STALE_AFTER_S = {
  spo2: 900, heart_rate: 900, respiratory_rate: 43200, systolic_bp: 43200, body_temperature: 43200,
};

const state = {
  token: sessionStorage.getItem("wardwatch-token"),
  muted: sessionStorage.getItem("wardwatch-muted") === "1",
  bands: null,
  knownHigh: new Set(),
  firstLoad: true,
  source: null,
  sparks: new Map(),
  reloadTimer: null,
};

const $ = (selector) => document.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};
const svgEl = (tag, attrs = {}) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
};

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < -5) return "ahead of server clock";
  if (seconds < 0) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}
function inTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds <= 0) return "due now";
  if (seconds < 90) return `in ${Math.round(seconds)} s`;
  return `in ${Math.round(seconds / 60)} min`;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const response = await fetch(`${API}${path}`, {
    ...options,
    headers: {
      Accept: "application/json",
      Authorization: `Bearer ${state.token}`,
      ...(options.body ? { "Content-Type": "application/json" } : {}),
      ...(options.headers || {}),
    },
  });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) signOut("Your session has ended; sign in again.");
    throw new ApiError(response.status, body);
  }
  return body;
}

// -------------------------------------------------------------------------------------------- sign-in

async function signIn(token) {
  state.token = token;
  try {
    await api("/patients");
  } catch (error) {
    state.token = null;
    throw error;
  }
  sessionStorage.setItem("wardwatch-token", token);
  start();
}

function signOut(message = "") {
  sessionStorage.removeItem("wardwatch-token");
  state.token = null;
  if (state.source) state.source.close();
  state.source = null;
  for (const id of ["nav", "session"]) $(`#${id}`).hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message;
  $("#token").focus();
}

// -------------------------------------------------------------------------------------------- live

async function connectEvents() {
  if (state.source) state.source.close();
  const live = $("#live");
  try {
    const { ticket } = await api("/events/ticket", { method: "POST" });
    const source = new EventSource(`${API}/events?ticket=${encodeURIComponent(ticket)}`);
    state.source = source;
    source.addEventListener("open", () => {
      live.textContent = "live";
      live.className = "live ok";
    });
    source.addEventListener("error", () => {
      live.textContent = "reconnecting…";
      live.className = "live down";
      source.close();
      setTimeout(() => state.token && connectEvents(), 3000);
    });
    for (const kind of ["alert", "patient", "gateway", "command", "resync"]) {
      source.addEventListener(kind, () => scheduleReload());
    }
  } catch (error) {
    live.textContent = "offline";
    live.className = "live down";
    setTimeout(() => state.token && connectEvents(), 5000);
  }
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(render, 250);
}

// -------------------------------------------------------------------------------------------- sound

function beep() {
  if (state.muted) return;
  try {
    const context = new AudioContext();
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.frequency.value = 880;
    gain.gain.value = 0.15;
    oscillator.connect(gain).connect(context.destination);
    oscillator.start();
    oscillator.stop(context.currentTime + 0.6);
  } catch (_error) {
    // no audio device: the flashing row and the count still show it
  }
}

function setMuted(muted) {
  state.muted = muted;
  sessionStorage.setItem("wardwatch-muted", muted ? "1" : "0");
  const button = $("#mute");
  button.setAttribute("aria-pressed", muted ? "true" : "false");
  button.textContent = muted ? "Sound off" : "Sound on";
}

// -------------------------------------------------------------------------------------------- views

function riskBadge(news2) {
  if (!news2) return el("span", { class: "risk none" }, "No score");
  const label = `${RISK_LABEL[news2.risk] || news2.risk} · ${news2.total}`;
  return el("span", { class: `risk ${news2.risk}` + (news2.trend_rising ? " trend-rising" : "") }, label);
}

function scoringParts(news2) {
  if (!news2) return "";
  const parts = Object.entries(news2.components)
    .filter(([, score]) => score)
    .map(([name, score]) => `${COMPONENT_LABEL[name] || name} ${score}`);
  const missing = Object.entries(news2.components).filter(([, score]) => score === null).length;
  return parts.join(", ") + (missing ? ` (${missing} missing)` : "") || "all 0";
}

function vitalCell(patient, code) {
  const reading = patient.latest[code];
  if (!reading) return el("td", { class: "vital" }, el("span", { class: "value" }, "—"));
  const stale = reading.age_s > (STALE_AFTER_S[code] ?? 43200);
  const flags = reading.quality.length ? ` (${reading.quality.join(", ")})` : "";
  const cell = el(
    "td",
    { class: "vital" + (stale ? " stale" : ""), title: stale ? "older than its staleness window" : null },
    el("span", { class: "value" }, `${formatValue(code, reading.value)}${flags}`),
    el("span", { class: "age" }, ago(reading.age_s)),
  );
  const spark = el("span", { class: "spark", "data-patient": patient.patient_id, "data-vital": code });
  cell.append(spark);
  return cell;
}

function formatValue(code, value) {
  return code === "body_temperature" ? value.toFixed(1) : Math.round(value).toString();
}

async function renderBoard() {
  const { patients } = await api("/patients");
  const body = $("#board tbody");
  body.replaceChildren();
  $("#board-empty").hidden = patients.length > 0;
  const newHigh = [];
  for (const patient of patients) {
    const name = patient.display_name || patient.patient_id;
    const isHigh = patient.news2?.risk === "high";
    if (isHigh && !state.knownHigh.has(patient.patient_id) && !state.firstLoad) newHigh.push(patient.patient_id);
    if (isHigh) state.knownHigh.add(patient.patient_id);
    else state.knownHigh.delete(patient.patient_id);
    const open = () => (location.hash = `#/patient/${encodeURIComponent(patient.patient_id)}`);
    const row = el(
      "tr",
      {
        class: "patient" + (newHigh.includes(patient.patient_id) ? " new-high" : ""),
        tabindex: "0",
        "data-patient": patient.patient_id,
        onclick: open,
        onkeydown: (event) => event.key === "Enter" && open(),
      },
      el("th", { scope: "row" }, el("a", { href: `#/patient/${encodeURIComponent(patient.patient_id)}` }, name),
        patient.display_name ? el("small", {}, ` ${patient.patient_id}`) : null),
      el("td", {}, riskBadge(patient.news2)),
      el("td", {}, scoringParts(patient.news2)),
      VITALS.map(([code]) => vitalCell(patient, code)),
      el("td", {}, ago(patient.data_age_s),
        patient.gateway_online === false ? el("span", { class: "offline" }, " · gateway offline") : null),
      el("td", {}, patient.open_alerts ? `${patient.open_alerts} open (${patient.top_priority})` : "none"),
    );
    body.append(row);
  }
  if (newHigh.length) beep();
  state.firstLoad = false;
  drawSparklines(patients);
}

async function drawSparklines(patients) {
  for (const patient of patients) {
    const cached = state.sparks.get(patient.patient_id);
    if (!cached || Date.now() - cached.at > 300_000) {
      try {
        const trend = await api(`/patients/${encodeURIComponent(patient.patient_id)}/trend?hours=24&buckets=48`);
        state.sparks.set(patient.patient_id, { at: Date.now(), trend });
      } catch (_error) {
        continue;
      }
    }
    const { trend } = state.sparks.get(patient.patient_id);
    for (const holder of document.querySelectorAll(`.spark[data-patient="${CSS.escape(patient.patient_id)}"]`)) {
      const series = trend.vitals[holder.dataset.vital] || [];
      holder.replaceChildren(sparkline(series, Date.parse(trend.since), Date.parse(trend.until)));
    }
  }
}

function sparkline(series, start, end) {
  const width = 90, height = 22;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const points = series.filter((point) => point.mean !== null);
  svg.setAttribute("aria-label", points.length ? `24-hour trend, ${points.length} points` : "no data in 24 h");
  if (!points.length) return svg;
  const values = points.map((point) => point.mean);
  const low = Math.min(...values), high = Math.max(...values), span = high - low || 1;
  const d = points
    .map((point, index) => {
      const x = ((Date.parse(point.start) - start) / (end - start || 1)) * (width - 2) + 1;
      const y = height - 2 - ((point.mean - low) / span) * (height - 4);
      return `${index ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
  svg.append(svgEl("path", { d, fill: "none", stroke: "#12263a", "stroke-width": "1.2" }));
  const last = points[points.length - 1];
  const lastX = ((Date.parse(last.start) - start) / (end - start || 1)) * (width - 2) + 1;
  svg.append(svgEl("circle", { cx: lastX, cy: height - 2 - ((last.mean - low) / span) * (height - 4), r: 1.8, fill: "#12263a" }));
  return svg;
}

async function renderPatient(patientId) {
  const detail = await api(`/patients/${encodeURIComponent(patientId)}`);
  const patient = detail.patient;
  $("#patient-title").textContent = patient.display_name
    ? `${patient.display_name} (${patient.patient_id})`
    : patient.patient_id;
  $("#patient-summary").replaceChildren(
    el("div", {}, "NEWS2 ", riskBadge(patient.news2)),
    el("div", {}, "Scoring: ", scoringParts(patient.news2) || "—"),
    el("div", {}, "Last data ", ago(patient.data_age_s)),
    el("div", {}, "Gateway ", patient.gateway_id || "—", " ",
      patient.gateway_online ? el("span", { class: "online" }, "online") : el("span", { class: "offline" }, "offline")),
  );
  const settings = detail.settings;
  const form = $("#settings-form");
  form.spo2_scale.value = String(settings.spo2_scale);
  form.on_oxygen.value = String(settings.on_oxygen);
  form.consciousness.value = settings.consciousness;
  form.dataset.patient = patient.patient_id;
  $("#commands").replaceChildren(
    ...detail.commands.slice(0, 8).map((command) =>
      el("li", { "data-state": command.state },
        `${command.name} ${JSON.stringify(command.body)} by ${command.issued_by}: `,
        el("strong", {}, command.state),
        command.ack_detail ? ` — ${command.ack_detail}` : ""),
    ),
  );
  $("#alert-history").replaceChildren(
    ...[...detail.open_alerts, ...detail.recent_alerts.filter((a) => a.state === "resolved")].map((alert) =>
      el("li", {}, el("span", { class: `prio-${alert.priority}` }, alert.priority), ` ${alert.condition}: `,
        alert.reason, ` — ${alert.state}, raised ${ago(alert.age_s)}`),
    ),
  );
  await renderCharts(patient.patient_id, settings);
}

async function renderCharts(patientId, settings) {
  const trend = await api(`/patients/${encodeURIComponent(patientId)}/trend?hours=24&buckets=144`);
  const holder = $("#patient-charts");
  holder.replaceChildren();
  const bands = state.bands || {};
  const spo2Band = settings.spo2_scale === 2 ? (settings.on_oxygen ? "spo2_scale_2_on_oxygen" : "spo2_scale_2_on_air") : "spo2_scale_1";
  for (const [code, label, unit] of VITALS) {
    const band = bands[code === "spo2" ? spo2Band : CHART_BANDS[code]];
    holder.append(chartFigure(`${label} (${unit})`, trend.vitals[code] || [], band, trend, CHART_RANGE[code]));
  }
  holder.append(chartFigure("NEWS2 total", trend.news2 || [], bands.news2_total, trend, CHART_RANGE.news2));
}

function chartFigure(title, series, band, trend, range) {
  const width = 640, height = 120, left = 34, right = 6, top = 6, bottom = 18;
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}, last 24 hours` });
  const points = series.filter((point) => point.mean !== null);
  const start = Date.parse(trend.since), end = Date.parse(trend.until);
  let [low, high] = range || [Infinity, -Infinity];
  for (const point of points) { low = Math.min(low, point.min); high = Math.max(high, point.max); }
  if (!isFinite(low)) { low = 0; high = 1; }
  const pad = (high - low) * 0.04 || 1; low -= pad; high += pad;
  const x = (t) => left + ((t - start) / (end - start)) * (width - left - right);
  const y = (v) => top + (1 - (v - low) / (high - low)) * (height - top - bottom);
  if (band?.cuts) {
    const edges = [low, ...band.cuts.filter((c) => c > low && c < high), high];
    const scores = band.scores.slice(band.cuts.filter((c) => c <= low).length);
    for (let i = 0; i < edges.length - 1; i++) {
      const score = scores[i];
      if (!score) continue;
      svg.append(svgEl("rect", { class: `band s${Math.min(score, 3)}`, x: left, width: width - left - right,
        y: y(edges[i + 1]), height: Math.max(0, y(edges[i]) - y(edges[i + 1])) }));
    }
    for (const cut of band.cuts) {
      if (cut <= low || cut >= high) continue;
      svg.append(svgEl("line", { class: "edge", x1: left, x2: width - right, y1: y(cut), y2: y(cut) }));
      const text = svgEl("text", { class: "axis", x: 2, y: y(cut) + 3 });
      text.textContent = String(cut);
      svg.append(text);
    }
  }
  if (points.length) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(Date.parse(p.start)).toFixed(1)},${y(p.mean).toFixed(1)}`).join(" ");
    svg.append(svgEl("path", { class: "line", d }));
    for (const p of points) {
      const cx = x(Date.parse(p.start));
      if (p.max > p.min) svg.append(svgEl("line", { class: "range", x1: cx, x2: cx, y1: y(p.min), y2: y(p.max) }));
      svg.append(svgEl("circle", { class: "dot", cx, cy: y(p.mean), r: 2.2 }));
    }
  }
  for (const hoursAgo of [24, 18, 12, 6, 0]) {
    const t = end - hoursAgo * 3600_000;
    const text = svgEl("text", { class: "axis", x: hoursAgo ? x(t) - 10 : x(t), y: height - 4, "text-anchor": hoursAgo ? "start" : "end" });
    text.textContent = hoursAgo ? `-${hoursAgo} h` : "now";
    svg.append(text);
  }
  const figure = el("figure", {}, el("figcaption", {}, title, points.length ? "" : " — no data"));
  figure.append(svg);
  return figure;
}

async function renderAlerts() {
  const { alerts } = await api("/alerts");
  const body = $("#queue tbody");
  body.replaceChildren();
  $("#queue-empty").hidden = alerts.length > 0;
  $("#alert-count").textContent = alerts.length ? String(alerts.length) : "";
  for (const alert of alerts) {
    const subject = alert.patient_id || alert.gateway_id || alert.subject;
    body.append(
      el("tr", { "data-alert": alert.alert_id, "data-state": alert.state },
        el("td", { class: `prio-${alert.priority}` }, alert.priority),
        el("td", {}, alert.patient_id ? el("a", { href: `#/patient/${encodeURIComponent(alert.patient_id)}` }, subject) : subject,
          el("small", {}, ` ${alert.category}`)),
        el("td", {}, alert.reason),
        el("td", {}, ago(alert.age_s)),
        el("td", {}, `tier ${alert.tier}`),
        el("td", {}, inTime(alert.next_escalation_in_s)),
        el("td", {}, alert.state + (alert.acknowledged_by ? ` by ${alert.acknowledged_by}` : "")),
        el("td", {},
          el("button", { type: "button", onclick: () => alertAction(alert, "acknowledge") }, "Acknowledge"), " ",
          el("button", { type: "button", onclick: () => alertAction(alert, "escalate") }, "Escalate"), " ",
          el("button", { type: "button", onclick: () => alertAction(alert, "resolve") }, "Resolve"), " ",
          alert.priority === "high" || alert.priority === "emergency"
            ? null
            : el("button", { type: "button", onclick: () => alertAction(alert, "snooze") }, "Snooze 15 min")),
      ),
    );
  }
}

function confirmDialog({ title, text, noteRequired, noteLabel = "Note" }) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-note-label").textContent = noteRequired ? `${noteLabel} (required)` : `${noteLabel} (optional)`;
    const note = $("#confirm-note");
    note.value = "";
    note.required = noteRequired;
    $("#confirm-error").textContent = "";
    const finish = (value) => {
      dialog.close();
      $("#confirm-form").onsubmit = null;
      $("#confirm-cancel").onclick = null;
      resolve(value);
    };
    $("#confirm-cancel").onclick = () => finish(null);
    $("#confirm-form").onsubmit = (event) => {
      event.preventDefault();
      if (noteRequired && !note.value.trim()) {
        $("#confirm-error").textContent = "A note is required.";
        note.focus();
        return;
      }
      finish({ note: note.value.trim() });
    };
    dialog.showModal();
    note.focus();
  });
}

async function alertAction(alert, action) {
  const subject = alert.patient_id || alert.gateway_id || alert.subject;
  const answer = await confirmDialog({
    title: `${action[0].toUpperCase()}${action.slice(1)} alert`,
    text: `${alert.priority} ${alert.condition} for ${subject}: ${alert.reason}`,
    noteRequired: action === "resolve",
  });
  if (!answer) return;
  const body = action === "snooze" ? { duration_s: 900, note: answer.note || null } : { note: answer.note || null };
  if (action === "resolve") body.note = answer.note;
  try {
    await api(`/alerts/${alert.alert_id}/${action}`, { method: "POST", body: JSON.stringify(body) });
  } catch (error) {
    window.alert(`Could not ${action}: ${error.message}`);
  }
  await render();
}

async function renderEquipment() {
  const { gateways } = await api("/gateways");
  const holder = $("#gateways");
  holder.replaceChildren();
  if (!gateways.length) holder.append(el("p", { class: "empty" }, "No gateways yet."));
  for (const gateway of gateways) {
    holder.append(
      el("section", { class: "card gateway", "data-gateway": gateway.gateway_id },
        el("h3", {}, gateway.gateway_id, " ",
          gateway.online ? el("span", { class: "online" }, "online") : el("span", { class: "offline" }, "OFFLINE")),
        el("p", {}, `Last seen ${ago(gateway.last_seen_age_s)} · backlog ${gateway.backlog ?? "?"}`,
          gateway.oldest_unsent_age_s ? ` (oldest ${ago(gateway.oldest_unsent_age_s)})` : "",
          ` · clock ${gateway.clock_synchronized === false ? "NOT synchronised" : gateway.clock_synchronized ? "synchronised" : "unknown"}`,
          gateway.missing_messages ? ` · ${gateway.missing_messages} messages missing` : ""),
        el("table", {},
          el("thead", {}, el("tr", {}, ["Device", "Kind", "Connection", "Battery", "Last reading"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, gateway.devices.map((device) =>
            el("tr", {},
              el("td", {}, device.device_id), el("td", {}, device.device_kind || "—"),
              el("td", {}, device.connected ? "connected" : el("span", { class: "offline" }, "disconnected")),
              el("td", {}, device.battery_pct === null ? "—" : `${device.battery_pct} %` + (device.battery_pct < 20 ? " (low)" : "")),
              el("td", {}, ago(device.last_reading_age_s)))))),
        gateway.technical_alarms.length
          ? el("ul", {}, gateway.technical_alarms.map((alarm) =>
              el("li", { class: `prio-${alarm.priority}` }, `${alarm.condition}: ${alarm.reason} (${alarm.state})`)))
          : el("p", { class: "empty" }, "No technical alarms."),
      ),
    );
  }
}

// -------------------------------------------------------------------------------------------- routing

async function render() {
  if (!state.token) return;
  const hash = location.hash || "#/board";
  const [, view, argument] = hash.split("/");
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  for (const link of document.querySelectorAll("#nav a")) {
    link.toggleAttribute("aria-current", link.dataset.view === view);
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
  }
  try {
    if (view === "patient" && argument) {
      $("#view-patient").hidden = false;
      await renderPatient(decodeURIComponent(argument));
    } else if (view === "alerts") {
      $("#view-alerts").hidden = false;
      await renderAlerts();
    } else if (view === "equipment") {
      $("#view-equipment").hidden = false;
      await renderEquipment();
    } else {
      $("#view-board").hidden = false;
      await renderBoard();
    }
    if (view !== "alerts") {
      const { alerts } = await api("/alerts");
      $("#alert-count").textContent = alerts.length ? String(alerts.length) : "";
    }
  } catch (error) {
    if (error.status !== 401) console.error(error);
  }
}

async function start() {
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#session").hidden = false;
  if (!state.bands) {
    state.bands = await fetch("web/bands.json").then((r) => r.json()).catch(() => ({}));
  }
  await render();
  connectEvents();
}

document.addEventListener("DOMContentLoaded", () => {
  setMuted(state.muted);
  $("#mute").addEventListener("click", () => setMuted(!state.muted));
  $("#sign-out").addEventListener("click", () => signOut());
  $("#sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#sign-in-error").textContent = "";
    try {
      await signIn($("#token").value.trim());
    } catch (error) {
      $("#sign-in-error").textContent =
        error.status === 429 ? "Too many attempts; wait a minute." : "That token was refused.";
    }
  });
  $("#settings-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const settings = {
      spo2_scale: Number(form.spo2_scale.value),
      on_oxygen: form.on_oxygen.value === "true",
      consciousness: form.consciousness.value,
    };
    const answer = await confirmDialog({
      title: "Change settings",
      text: `Send to the gateway: SpO2 scale ${settings.spo2_scale}, ${settings.on_oxygen ? "on oxygen" : "air"}, consciousness ${settings.consciousness}?`,
      noteRequired: false,
    });
    if (!answer) return;
    try {
      await api(`/patients/${encodeURIComponent(form.dataset.patient)}/settings`, {
        method: "POST", body: JSON.stringify(settings),
      });
    } catch (error) {
      window.alert(`Could not send: ${error.message}`);
    }
    await render();
  });
  window.addEventListener("hashchange", render);
  setInterval(() => state.token && render(), 30_000); // ages move on even when nothing happens
  if (state.token) start();
  else $("#token").focus();
});
