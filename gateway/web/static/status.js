// Operator status page: polls /status.json every 3 s and renders each part as text.
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
    automated_sms: "Automated SMS budget" };
  const SKIP = new Set(["generated_at", "recent_errors"]);
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
      li.append(el("strong", null, t.name + " "),
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
      const t = await call("POST", "/api/v1/tokens", { name: $("token-name").value });
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
