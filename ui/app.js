// The dashboard: reads /api/status and /api/requests, listens to /api/events, and changes
// things only through the gateway's API. No framework, no build step: the file is served as is.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { status: null, requests: [], models: null, fresh: new Set() };
const COLORS = ["#2563eb", "#16a34a", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4b5563"];
const colorOf = (() => {
  const seen = new Map();
  return (key) => {
    if (!seen.has(key)) seen.set(key, key && key.startsWith("local") ? "#1d4ed8" : COLORS[seen.size % COLORS.length]);
    return seen.get(key);
  };
})();

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // 401: no session (the page was opened without its one-time link, or the gateway restarted).
  $("#signin").hidden = r.status !== 401 && $("#signin").hidden;
  if (r.status === 401) $("#overall").textContent = "not signed in";
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch { v = { error: text }; }
  if (!r.ok) {
    const msg = (v && (v.error && (v.error.message || v.error))) || `HTTP ${r.status}`;
    const err = new Error(typeof msg === "string" ? msg : JSON.stringify(msg));
    err.body = v;
    throw err;
  }
  return v;
}

const ms = (v) => (v === null || v === undefined ? "–" : v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`);
const num = (v) => (v || 0).toLocaleString("en-US");
const usd = (v) => `$${(v || 0).toFixed(v >= 1 ? 2 : 4)}`;
const pct = (v) => `${Math.round((v || 0) * 100)} %`;
const time = (t) => new Date(t).toLocaleTimeString([], { hour12: false });

function sparkline(points) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 30");
  svg.setAttribute("preserveAspectRatio", "none");
  if (!points || points.length < 2) return svg;
  const max = Math.max(...points, 1);
  const step = 100 / (points.length - 1);
  const d = points.map((p, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(28 - (p / max) * 26).toFixed(1)}`).join(" ");
  const path = document.createElementNS(svg.namespaceURI, "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "#2563eb");
  path.setAttribute("stroke-width", "1.5");
  path.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(path);
  points.forEach((p, i) => {
    if (p > 0) return; // a failure
    const c = document.createElementNS(svg.namespaceURI, "circle");
    c.setAttribute("cx", (i * step).toFixed(1));
    c.setAttribute("cy", "27");
    c.setAttribute("r", "1.6");
    c.setAttribute("fill", "#b42318");
    svg.append(c);
  });
  return svg;
}

// What is known of a provider, as the gateway judged it (`health` in /api/status: never
// "healthy" on no evidence), in words.
const HEALTH_WORDS = {
  unknown: "not checked yet", reachable: "reachable", healthy: "healthy",
  key_rejected: "key rejected", key_missing: "key missing", unreachable: "unreachable", offline: "offline",
  failing: "failing", recovering: "on trial", local: "local",
};

function providerHealth(p) {
  return p.health || (p.kind === "local" ? "local" : "unknown");
}

// The evidence behind it: the last check (what it saw) and the last real request, with when.
function evidence(p) {
  const lines = [];
  if (p.check) lines.push(el("div", { class: "check", "data-reach": p.check.reach }, `checked ${time(p.check.at_ms)}: ${p.check.detail}`));
  if (p.last_request) lines.push(el("div", { class: "muted" }, `last request ${time(p.last_request.at_ms)}${p.last_request.ok ? "" : " (failed)"}`));
  if (p.kind !== "local" && !p.check && !p.last_request) lines.push(el("div", { class: "muted" }, "no check and no request yet"));
  return lines;
}

// What the provider's own status page declares, beside what Understudy measured: each
// unresolved incident, and who knew first when Understudy's requests were failing then.
function statusPage(p) {
  const page = p.status_page;
  if (!page) return null;
  const lead = (i) => {
    if (i.first_failure_ms == null) return "";
    const d = Math.round(Math.abs(i.declared_ms - i.first_failure_ms) / 60000);
    return i.first_failure_ms <= i.declared_ms ? ` · Understudy saw failures ${d} min before the page` : ` · the page declared it ${d} min before Understudy saw failures`;
  };
  if (page.error) return el("div", { class: "status-page muted" }, `status page not read: ${page.error}`);
  if (!page.incidents.length) return el("div", { class: "status-page muted" }, `status page: ${page.description || "no incident"}`);
  return page.incidents.map((i) => el("div", { class: "status-page incident", "data-incident": i.id, "data-relevant": String(i.relevant) },
    `status page: ${i.name} (${i.impact}, ${i.status}) · declared ${time(i.declared_ms)}${lead(i)}`));
}

// What its rate-limit headers said, per credential: a bar per window (a plan's 5-hour and
// weekly windows, an API key's requests and tokens), with when it resets; a refusal first.
function quota(p, now) {
  const inWords = (at) => {
    const s = Math.max(0, Math.ceil((at - now) / 1000));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.ceil(s / 60)} m`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  };
  return (p.quota || []).map((q) => {
    const refused = q.out_until_ms && q.out_until_ms > now;
    return el("div", { class: "quota", "data-credential": q.credential, "data-refused": String(!!refused) },
      el("div", { class: "quota-head" }, q.plan ? "plan" : "rate limits",
        q.credential !== "key" ? el("span", { class: "muted" }, ` · ${q.credential}`) : null,
        refused ? el("span", { class: "refused" }, ` · refused until the reset in ${inWords(q.out_until_ms)}`) : null),
      q.windows.map((w) => el("div", { class: "window", "data-window": w.name },
        el("span", {}, w.label || w.name),
        el("meter", { min: "0", max: "1", low: "0.8", high: "0.95", optimum: "0", value: String(w.utilization) }),
        el("span", {}, pct(w.utilization), w.resets_at_ms ? el("span", { class: "muted" }, ` · resets in ${inWords(w.resets_at_ms)}`) : null))));
  });
}

function renderHeader(s) {
  const o = $("#overall");
  o.dataset.state = s.summary ? s.summary.state : "unknown";
  o.textContent = s.summary ? s.summary.text.replace(/^Understudy: /, "") : "";
  for (const b of document.querySelectorAll("[data-mode]")) b.setAttribute("aria-pressed", String(b.dataset.mode === s.mode));
  $("#pause").setAttribute("aria-pressed", String(!!s.paused));
  $("#pause").textContent = s.paused ? "Resume" : "Pause";
  const cc = s.claude_code;
  const btn = $("#claude-code");
  btn.disabled = !cc;
  btn.setAttribute("aria-pressed", String(!!(cc && cc.connected)));
  btn.textContent = cc && cc.connected ? "Claude Code connected" : "Connect Claude Code";
  btn.title = cc ? `${cc.settings}${cc.url ? ` → ${cc.url}` : ""}` : "no home directory";
  $("#setup").textContent = `export ANTHROPIC_BASE_URL=${location.origin}`;
}

function renderTotals(s) {
  const t = s.totals || {};
  const box = (label, value, id) => el("div", { id }, el("b", {}, value), el("span", { class: "muted" }, label));
  $("#totals").replaceChildren(
    box("requests", num(t.requests), "total-requests"),
    box("failed over", num(t.failovers), "total-failovers"),
    box("continued", num(t.continued), "total-continued"),
    box("failed", num(t.failed), "total-failed"),
    box("tokens in / out", `${num(t.input_tokens)} / ${num(t.output_tokens)}`, "total-tokens"),
    box("estimated spend", usd(t.spend_usd), "total-spend"),
  );
}

function renderProviders(s) {
  const cards = s.providers.map((p) => {
    const health = providerHealth(p);
    const words = health === "reachable" && !p.last_request ? "reachable, no requests yet" : (HEALTH_WORDS[health] || health);
    const backends = p.backends.map((b) => {
      const st = b.stats || {};
      const classes = Object.entries(st.errors_by_class || {}).map(([k, v]) => `${k} ×${v}`).join(", ");
      return el("div", { class: "backend", "data-backend": b.backend },
        el("div", {}, el("span", { class: "name" }, b.backend.split("/").slice(1).join("/") || b.backend), " · breaker ",
          el("span", { class: `breaker-${b.breaker}`, "data-breaker": b.breaker }, b.breaker.replace("_", "-"))),
        el("div", { class: "kv" },
          el("span", {}, "first token"), el("span", {}, `${ms(st.ttft_p50_ms)} p50 · ${ms(st.ttft_p95_ms)} p95`),
          el("span", {}, "whole answer"), el("span", {}, `${ms(st.total_p50_ms)} p50 · ${ms(st.total_p95_ms)} p95`),
          el("span", {}, "errors"), el("span", {}, `${pct(st.error_rate)} (15 min)${classes ? ` · ${classes}` : ""}`),
          el("span", {}, "truncated"), el("span", {}, num(st.truncations)),
          el("span", {}, "tokens"), el("span", {}, `${num(st.input_tokens)} in · ${num(st.output_tokens)} out · ${usd(st.spend_usd)}`),
        ),
        sparkline(st.spark));
    });
    return el("div", { class: "card", "data-provider": p.name, "data-health": health },
      el("h4", {}, el("span", {}, p.name, el("span", { class: "muted" }, ` · ${p.kind}`)), el("span", { class: "state" }, words)),
      evidence(p),
      statusPage(p),
      quota(p, s.at_ms || Date.now()),
      backends);
  });
  $("#providers").replaceChildren(...cards);
}

// Who wrote which part: a backend that continued a broken answer says how it was asked to.
const METHOD = { prefill: "continued from where it stopped", instruct: "continued by instruction" };

// An outcome in words, as the gateway words it (telemetry::entry::outcome_words): "local model
// crashed, SIGILL", "key rejected, HTTP 401", "offline", never a bare class.
const OUTCOME_WORDS = {
  offline: "offline", connect: "unreachable", truncated: "cut off mid-answer",
  first_byte_timeout: "no answer in time", first_content_timeout: "no content in time",
  idle_timeout: "stalled", total_timeout: "took too long", transport: "connection broke",
  malformed: "malformed answer", oversize: "answer too large", client_disconnected: "client left",
  status: "upstream error",
};
function outcomeWords(outcome, detail) {
  if (outcome === "crashed") {
    const sig = detail && (detail.match(/\bSIG[A-Z]+\b/) || [])[0];
    return sig ? `local model crashed, ${sig}` : "local model crashed";
  }
  const http = /^http_(\d+)$/.exec(outcome);
  if (http) {
    const code = http[1];
    if (code === "401" || code === "403") return `key rejected, HTTP ${code}`;
    if (code === "429") return "rate limited, HTTP 429";
    if (code === "529") return "overloaded, HTTP 529";
    return `HTTP ${code}`;
  }
  return OUTCOME_WORDS[outcome] || outcome.replaceAll("_", " ");
}

function pathOf(e) {
  return e.attempts.map((a) => {
    const notes = [];
    if (a.continuation) notes.push(METHOD[a.continuation] || `continued (${a.continuation})`);
    if (a.outcome !== "complete") notes.push(outcomeWords(a.outcome, a.detail));
    return notes.length ? `${a.backend} (${notes.join(", ")})` : a.backend;
  }).join(" → ");
}

// Why the request's last attempt failed, in the gateway's words.
function lastDetail(e) {
  const a = e.attempts[e.attempts.length - 1];
  return (a && a.detail) || "";
}

function renderFeed() {
  const rows = state.requests.slice(0, 100).map((e) => {
    const failed = e.outcome !== "complete";
    const failover = e.attempts.length > 1 && !e.continued;
    const cls = failed ? "failed" : e.continued ? "continued" : failover ? "failover" : "";
    return el("tr", { class: `${cls}${state.fresh.has(e.id) ? " fresh" : ""}`, "data-id": e.id, "data-served-by": e.served_by || "" },
      el("td", {}, time(e.at_ms)),
      el("td", {}, e.dialect),
      el("td", {}, e.model),
      el("td", {}, e.served_by || "–",
        failover ? el("span", { class: "tag failover" }, "failed over") : null,
        e.continued ? el("span", { class: "tag continued" }, "continued") : null,
        failed ? el("span", { class: "tag failed", title: lastDetail(e) }, outcomeWords(e.outcome, lastDetail(e))) : null),
      el("td", { class: "muted" }, pathOf(e)),
      el("td", { title: lastDetail(e) }, failed ? outcomeWords(e.outcome, lastDetail(e)) : e.outcome),
      el("td", {}, `${num(e.input_tokens)} / ${num(e.output_tokens)}`),
      el("td", {}, Math.round(e.duration_ms)));
  });
  $("#feed tbody").replaceChildren(...rows);
  $("#feed-empty").hidden = rows.length > 0;
  state.fresh.clear();
  renderTimeline();
}

// An SVG bar; its tooltip is text (a backend's name carries the client's model name, which
// must never be read as markup).
const SVG = "http://www.w3.org/2000/svg";
function svgRect(x, y, width, height, fill, title) {
  const r = document.createElementNS(SVG, "rect");
  for (const [k, v] of Object.entries({ x, y, width, height, rx: 1.5, fill })) r.setAttribute(k, String(v));
  if (title) {
    const t = document.createElementNS(SVG, "title");
    t.textContent = title;
    r.append(t);
  }
  return r;
}

function renderTimeline() {
  const svg = $("#timeline");
  const recent = state.requests.slice(0, 60).reverse();
  const w = 600 / 60;
  const parts = [];
  const legend = new Map();
  recent.forEach((e, i) => {
    const who = e.served_by || "failed";
    const color = e.served_by ? colorOf(e.served_by) : "#b42318";
    legend.set(who, color);
    const x = (i * w).toFixed(1);
    parts.push(svgRect(x, 8, (w - 1.5).toFixed(1), 30, color, who));
    if (e.attempts.length > 1) parts.push(svgRect(x, 2, (w - 1.5).toFixed(1), 4, "#ea580c"));
  });
  svg.replaceChildren(...parts);
  const keys = [...legend].map(([k, c]) => el("span", {}, el("i", { style: `background:${c}` }), k));
  if (recent.some((e) => e.attempts.length > 1)) keys.push(el("span", {}, el("i", { style: "background:#ea580c" }), "failed over first"));
  $("#legend").replaceChildren(...keys);
}

// Each provider's outages, from the journal (/api/timeline): one sentence each, and a bar per
// request while it was out, coloured by who answered instead (red: lost).
async function loadOutages() {
  const t = await api("GET", `/api/timeline?tz_offset_min=${-new Date().getTimezoneOffset()}`);
  const box = $("#outages");
  if (!t.outages.length) {
    box.replaceChildren(el("span", { class: "muted" }, "No provider has failed in the journal's span."));
    return;
  }
  box.replaceChildren(...t.outages.map((o) => {
    const n = Math.max(o.bars.length, 1);
    const w = 600 / Math.max(n, 30);
    const bars = o.bars.map(([at, who], i) =>
      svgRect((i * w).toFixed(1), 4, Math.max(w - 1.5, 1).toFixed(1), 22, who ? colorOf(who) : "#b42318", `${time(at)} · ${who || "lost"}`));
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "timeline");
    svg.setAttribute("viewBox", "0 0 600 30");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.replaceChildren(...bars);
    const legend = Object.keys(o.served_by).map((b) => el("span", {}, el("i", { style: `background:${colorOf(b)}` }), `${b} ×${o.served_by[b]}`));
    if (o.lost) legend.push(el("span", {}, el("i", { style: "background:#b42318" }), `lost ×${o.lost}`));
    return el("div", { class: "outage panel", "data-provider": o.provider, "data-over": String(o.ended_ms != null) },
      el("div", { class: "summary" }, o.summary), svg, el("div", { class: "legend" }, legend));
  }));
}

let outagesDue = null;
function refreshOutages() {
  if (outagesDue) return;
  outagesDue = setTimeout(() => { outagesDue = null; loadOutages().catch(() => {}); }, 1000);
}

function renderLocal(s) {
  const l = s.local;
  if (!l) {
    $("#local").replaceChildren(el("span", { class: "muted" }, "No local provider in the configuration."));
    return;
  }
  const last = l.last || {};
  const mb = (b) => (b ? `${Math.round(b / 1048576)} MB` : "–");
  const words = { not_loaded: "not loaded", loading: `loading ${Math.round((l.progress || 0) * 100)} %`, ready: `ready on ${l.gpu_layers ? `the GPU (${l.device})` : "the CPU"}`, crashed: "crashed (restarts on the next request)", failed: "failed to load" }[l.state] || l.state;
  $("#local").replaceChildren(el("div", { class: "kv", id: "local-state", "data-state": l.state },
    el("span", {}, "state"), el("span", {}, words),
    el("span", {}, "model"), el("span", {}, (l.model || "").split("/").pop() || "–"),
    el("span", {}, "device"), el("span", {}, l.device ? `${l.device}${l.gpu_layers ? `, ${l.gpu_layers}/${l.n_layers} layers` : ""}` : "–"),
    el("span", {}, "CPU mode"), el("span", { id: "local-cpu", "data-compatible": l.cpu && l.cpu.variant !== l.cpu.best ? "yes" : "no" },
      !l.cpu ? "–" : l.cpu.variant === l.cpu.best ? `${l.cpu.variant} (the best this CPU runs)`
        : `compatible mode: ${l.cpu.variant} instead of ${l.cpu.best} (without ${l.cpu.without.join(", ")})${l.cpu.why ? `, because ${l.cpu.why}` : ""}; ${l.cpu.cost}`),
    el("span", {}, "context"), el("span", { id: "local-context", title: l.context_why || "" }, l.n_ctx
      ? `${num(l.n_ctx)} tokens · ${l.kv_type || "f16"} KV cache ${mb(l.kv_bytes)} · ${l.slots || 1} conversations cached`
      : "–"),
    el("span", {}, "speed"), el("span", {}, last.tokens_per_second ? `${last.tokens_per_second.toFixed(1)} tokens/s (last answer)` : "–"),
    el("span", {}, "memory"), el("span", {}, `${mb(l.rss_bytes)} resident · model ${mb(l.model_bytes)}`),
    el("span", {}, "answers"), el("span", {}, `${num(l.answers)} · ${num(l.completion_tokens)} tokens`),
  ));
}

function renderModels() {
  const m = state.models;
  if (!m) return;
  const pulls = m.pulls || {};
  const installed = new Set(m.installed.map((x) => x.file));
  const rows = m.installed.map((x) => el("div", { class: "model", "data-model": x.name || x.file },
    el("span", { class: "grow" }, x.name || x.file, el("span", { class: "muted" }, ` · ${Math.round(x.size / 1048576)} MB`)),
    x.default ? el("b", {}, "default") : el("button", { onclick: () => act(() => api("PUT", "/api/models/default", { name: x.file }).then(loadModels)) }, "Make default")));
  const catalog = m.catalog.filter((c) => !installed.has(c.file)).map((c) => {
    const p = pulls[c.name];
    const pulling = p && p.state === "pulling";
    return el("div", { class: "model", "data-catalog": c.name },
      el("span", { class: "grow" }, c.name, el("span", { class: "muted" }, ` · ${c.size_mb} MB · ${c.description}`)),
      pulling ? el("progress", { max: p.total || 1, value: p.done || 0 }) : null,
      p && p.state === "failed" ? el("span", { class: "issues" }, p.error) : null,
      el("button", { disabled: pulling, onclick: () => act(() => api("POST", "/api/models/pull", { name: c.name }).then(loadModels)) }, pulling ? "Pulling…" : "Pull"));
  });
  $("#models").replaceChildren(el("div", { class: "muted" }, m.dir), ...rows, ...catalog);
}

async function act(f) {
  try { await f(); } catch (e) { alert(e.message); }
  refresh();
}

async function loadModels() {
  try { state.models = await api("GET", "/api/models"); renderModels(); } catch { /* no models dir */ }
}

// True once the editor holds the user's changes: a reload from disk then leaves it alone.
let configEdited = false;

async function loadConfig() {
  const c = await api("GET", "/api/config");
  $("#config-path").textContent = c.zero_config ? `Running on zero config, shown below as the file it amounts to; saving writes ${c.path}` : `File: ${c.path}`;
  $("#config-text").value = c.text;
  configEdited = false;
}

async function saveConfig(check) {
  const out = $("#config-result");
  const issues = $("#config-issues");
  issues.replaceChildren();
  try {
    const r = await api("PUT", "/api/config", { text: $("#config-text").value, check });
    if (!check) configEdited = false;
    out.textContent = check ? "Valid." : `Saved ${r.saved}${r.backup ? ` (previous kept as ${r.backup})` : ""}; ${r.applied}.`;
  } catch (e) {
    out.textContent = "Not saved:";
    const list = (e.body && e.body.error && e.body.error.issues) || [{ path: "", message: e.message }];
    issues.replaceChildren(...list.map((i) => el("li", {}, i.path ? `${i.path}: ${i.message}` : i.message)));
  }
}

// The latest live reload: an edit on disk that is invalid keeps the running configuration,
// and says why here with each issue's TOML path until it is fixed.
function renderConfigState(s) {
  const box = $("#config-state");
  const c = s.config;
  box.hidden = !c;
  if (!c) return;
  box.dataset.ok = String(c.ok);
  box.replaceChildren(el("div", {}, `${c.ok ? "Applied" : "Not applied"} at ${time(c.at_ms)}: ${c.message}`),
    ...(c.issues || []).map(([path, message]) => el("div", { class: "issue" }, path ? `${path}: ${message}` : message)));
}

function render() {
  const s = state.status;
  if (!s) return;
  renderHeader(s);
  renderConfigState(s);
  renderTotals(s);
  renderProviders(s);
  renderLocal(s);
}

let refreshTimer = null;
function refresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { state.status = await api("GET", "/api/status"); render(); } catch { /* gateway restarting */ }
  }, 150);
}

function listen() {
  const es = new EventSource("/api/events");
  es.onopen = () => $("#live").classList.add("on");
  es.onerror = () => $("#live").classList.remove("on");
  es.addEventListener("status", (ev) => { state.status = JSON.parse(ev.data); render(); });
  es.addEventListener("request", (ev) => {
    const e = JSON.parse(ev.data);
    if (!state.requests.some((r) => r.id === e.id)) {
      state.requests.unshift(e);
      state.requests.length = Math.min(state.requests.length, 200);
      state.fresh.add(e.id);
    }
    renderFeed();
    refresh();
    refreshOutages();
  });
  for (const name of ["breaker", "network", "check", "local", "pause", "quota", "config", "incident"]) es.addEventListener(name, refresh);
  es.addEventListener("breaker", refreshOutages);
  // An edit applied from disk shows in the editor, unless the editor holds unsaved changes.
  es.addEventListener("config", (ev) => { if (JSON.parse(ev.data).ok && !configEdited) loadConfig().catch(() => {}); });
  es.addEventListener("model_pull", (ev) => {
    const p = JSON.parse(ev.data);
    if (state.models) {
      state.models.pulls = { ...state.models.pulls, [p.name]: p };
      if (p.state !== "pulling") loadModels(); else renderModels();
    }
  });
}

function wire() {
  for (const b of document.querySelectorAll("[data-mode]")) b.addEventListener("click", () => act(() => api("PUT", "/api/mode", { mode: b.dataset.mode })));
  $("#pause").addEventListener("click", () => act(() => api("PUT", "/api/pause", { paused: !(state.status && state.status.paused) })));
  $("#claude-code").addEventListener("click", () => act(() => api("PUT", "/api/claude-code", { connected: !(state.status && state.status.claude_code && state.status.claude_code.connected) })));
  $("#config-check").addEventListener("click", () => saveConfig(true));
  $("#config-save").addEventListener("click", () => saveConfig(false));
  $("#config-text").addEventListener("input", () => { configEdited = true; });
}

async function main() {
  wire();
  listen();
  try {
    const r = await api("GET", "/api/requests?limit=100");
    const have = new Set(state.requests.map((e) => e.id));
    state.requests = state.requests.concat(r.requests.filter((e) => !have.has(e.id)));
    state.requests.sort((a, b) => b.id - a.id);
    renderFeed();
  } catch { /* shown when events arrive */ }
  loadModels();
  loadConfig().catch(() => {});
  loadOutages().catch(() => {});
  // Latency figures age out of their window even when nothing happens.
  setInterval(refresh, 10000);
}

main();
