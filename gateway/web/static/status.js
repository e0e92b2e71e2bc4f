// Operator status page: polls /status.json every 3 s. Verdict cards first (one per check, with the fix in words),
// then 24-hour sparklines, then every raw counter folded away. All text goes in through textContent.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  const TITLES = { gateway: "Gateway", asterisk: "Asterisk", sip: "SIP endpoints", modem: "GSM modem", transcription: "Transcription",
    store: "Store", today: "Today", webhooks: "Webhooks", web: "Web", bus: "Event bus", backup: "Backup",
    automated_sms: "Automated SMS budget", sms_inbound: "Received texts" };
  const SKIP = new Set(["generated_at", "recent_errors", "health", "history", "verdict"]);
  const STATE_WORDS = { ok: "OK", degraded: "needs attention", down: "not working", off: "off" };
  const VERDICT_WORDS = { ok: "Everything works.", degraded: "Working, but something needs attention.",
    down: "Something is not working: see the red cards." };
  function healthCard(h) {
    const sec = el("section", "health-card " + h.state);
    sec.setAttribute("data-check", h.name);
    const title = el("h2", null, h.title);
    title.append(el("span", "state", STATE_WORDS[h.state] || h.state));
    sec.append(title, el("p", "cause", h.cause));
    if (h.fix && h.state !== "ok") sec.append(el("p", "fix", "What to do: " + h.fix));
    const extra = Object.entries(h.details || {});
    if (h.since || extra.length) {
      const d = el("details");
      d.append(el("summary", null, "details"));
      const dl = el("dl");
      if (h.since) dl.append(el("dt", null, "since"), el("dd", null, new Date(h.since * 1000).toLocaleString()));
      for (const [k, v] of extra) dl.append(el("dt", null, k.replace(/_/g, " ")), el("dd", null, fmt(k, v)));
      d.append(dl);
      sec.append(d);
    }
    return sec;
  }
  const SPARK_TITLES = { modem_signal_dbm: ["Modem signal", "dBm"], outbox_depth: ["Texts waiting to go out", ""],
    transcription_backlog: ["Voicemails waiting for transcription", ""] };
  const SVG = "http://www.w3.org/2000/svg";
  function sparkline(name, points) {
    const box = el("section", "spark");
    box.setAttribute("data-series", name);
    const [title, unit] = SPARK_TITLES[name] || [name, ""];
    const h = el("h3", null, title);
    const values = points.filter((p) => p[1] !== null);
    const last = points.length ? points[points.length - 1][1] : null;
    h.append(el("span", "now", last === null ? "no data" : last + (unit ? " " + unit : "")));
    box.append(h);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 240 48");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title + " over the last 24 hours");
    if (values.length) {
      const now = Date.now() / 1000, start = now - 86400;
      let lo = Math.min(...values.map((p) => p[1])), hi = Math.max(...values.map((p) => p[1]));
      if (hi === lo) { hi += 1; lo -= 1; }
      const xy = values.map((p) => [Math.max(0, (p[0] - start) / 86400 * 240), 46 - (p[1] - lo) / (hi - lo) * 44]);
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", xy.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", "#2f6fed");
      line.setAttribute("stroke-width", "2");
      svg.append(line);
    }
    box.append(svg);
    return box;
  }
  function fmt(key, v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "number" && /(_at|since)$/.test(key) && v > 1e9) return new Date(v * 1000).toLocaleString();
    if (typeof v === "number" && /bytes$/.test(key)) return (v / 1048576).toFixed(1) + " MiB";
    if (Array.isArray(v)) {
      if (!v.length) return "none";
      if (v.every((x) => x === null || typeof x !== "object")) return v.join(", ");
      return v.length + " entr" + (v.length === 1 ? "y" : "ies");
    }
    if (typeof v === "object") {
      const parts = Object.entries(v).map(([k2, v2]) => k2.replace(/_/g, " ") + ": " + fmt(k2, v2));
      return parts.length ? parts.join(", ") : "none";
    }
    return String(v);
  }
  function health(v) {
    if (!v || typeof v !== "object") return "unknown";
    if ("error" in v) return "down";
    for (const k of ["up", "connected", "present", "ok"]) if (k in v) return v[k] ? "up" : "down";
    return "unknown";
  }
  function card(name, value) {
    const sec = el("section", "panel");
    sec.setAttribute("data-section", name);
    const h = el("h2", null, TITLES[name] || name);
    const hs = health(value);
    if (hs !== "unknown") h.append(el("span", "pill " + hs, hs === "up" ? "up" : "down"));
    sec.append(h);
    const dl = el("dl");
    if (value && typeof value === "object" && !Array.isArray(value)) {
      if (!Object.keys(value).length) dl.append(el("dt", null, "nothing yet"), el("dd", null, ""));
      for (const [k, v] of Object.entries(value)) {
        dl.append(el("dt", null, k.replace(/_/g, " ")), el("dd", null, fmt(k, v)));
      }
    } else {
      dl.append(el("dt", null, "value"), el("dd", null, fmt(name, value)));
    }
    sec.append(dl);
    return sec;
  }
  async function refresh() {
    try {
      const resp = await fetch("/status.json", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (resp.status === 401) { location.href = "/login?next=/status"; return; }
      const data = await resp.json();
      const ORDER = { down: 0, degraded: 1, off: 2, ok: 3 };
      const checks = (data.health || []).slice().sort((a, b) => ORDER[a.state] - ORDER[b.state]);
      $("verdict").textContent = VERDICT_WORDS[data.verdict] || "";
      $("verdict").className = "verdict " + (data.verdict || "");
      $("health").replaceChildren(...checks.map(healthCard));
      $("sparks").replaceChildren(...Object.entries(data.history || {}).map(([n, pts]) => sparkline(n, pts)));
      const cards = [];
      for (const [name, value] of Object.entries(data)) if (!SKIP.has(name)) cards.push(card(name, value));
      $("cards").replaceChildren(...cards);
      const errs = (data.recent_errors || []).map((e) => {
        const li = el("li");
        li.append(el("strong", null, e.level + " "), el("span", "muted", new Date(e.at * 1000).toLocaleString() + " " + e.logger + ": "),
          document.createTextNode(e.message));
        return li;
      });
      $("errors").replaceChildren(...(errs.length ? errs : [el("li", "muted", "No warnings or errors.")]));
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      $("updated").className = "live ok";
    } catch (e) {
      $("updated").textContent = "cannot reach the gateway";
      $("updated").className = "live down";
    }
  }
  // API tokens (admins only: the list answers 403 to everyone else and the panel stays hidden).
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  async function call(method, url, body) {
    const resp = await fetch(url, { method, credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(data.error || ("HTTP " + resp.status));
    return data;
  }
  async function loadTokens() {
    let data;
    try { data = await call("GET", "/api/v1/tokens"); } catch (e) { return; }
    $("tokens-panel").hidden = false;
    $("tokens").replaceChildren(...(data.tokens.length ? data.tokens.map((t) => {
      const li = el("li");
      li.append(el("strong", null, t.name + " "), el("span", null, "[" + (t.scopes || []).join(", ") + "] "),
        el("span", "muted", t.expires_at ? "expires " + new Date(t.expires_at * 1000).toLocaleDateString() + ", " : ""),
        el("span", "muted", t.revoked_at ? "revoked" : ("created " + new Date(t.created_at * 1000).toLocaleDateString()
          + (t.last_used_at ? ", last used " + new Date(t.last_used_at * 1000).toLocaleString() : ", never used"))));
      if (!t.revoked_at) {
        const b = el("button", "link", "Revoke");
        b.type = "button";
        b.addEventListener("click", async () => { await call("DELETE", "/api/v1/tokens/" + t.id); loadTokens(); });
        li.append(b);
      }
      return li;
    }) : [el("li", "muted", "No tokens yet.")]));
  }
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("token-new");
    try {
      const scopes = ["read", "send", "admin"].filter((x) => $("token-" + x).checked);
      const req = { name: $("token-name").value, scopes };
      if ($("token-days").value) req.expires_in_days = Number($("token-days").value);
      const t = await call("POST", "/api/v1/tokens", req);
      out.textContent = "New token for " + t.name + " (copy it now, it is not shown again): " + t.token;
      $("token-name").value = "";
    } catch (err) { out.textContent = err.message; }
    out.hidden = false;
    loadTokens();
  });
  loadTokens();
  refresh();
  setInterval(refresh, 3000);
})();
