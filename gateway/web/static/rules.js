// Rules settings view: renders /api/v1/continuity/settings as text (nothing is ever inserted as HTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  function el(tag, text, cls) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function pairs(dl, obj) {
    dl.replaceChildren();
    for (const [k, v] of Object.entries(obj || {})) {
      dl.append(el("dt", k.replace(/_/g, " ")), el("dd", Array.isArray(v) ? (v.length ? v.join(", ") : "none") : (v === "" ? "—" : v)));
    }
  }
  async function load() {
    const res = await fetch("/api/v1/continuity/settings", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!res.ok) { $("updated").textContent = "could not load the rules (" + res.status + ")"; return; }
    const s = await res.json();
    const body = $("rules").querySelector("tbody");
    body.replaceChildren();
    for (const r of s.rules || []) {
      const tr = el("tr");
      tr.setAttribute("data-rule", r.rule);
      tr.append(el("td", r.title + " (" + r.rule + ")"), el("td", r.enabled ? "on" : "off", r.enabled ? "on" : "off"));
      body.append(tr);
    }
    pairs($("restraint"), s.restraint);
    pairs($("hours"), Object.assign({ business_name: s.business_name, timezone: s.timezone,
      closed_dates: s.closed_dates, holiday_country: s.holiday_country }, s.business_hours));
    pairs($("templates"), s.templates);
    $("updated").textContent = s.enabled ? "rules are on" : "all rules are switched off";
  }
  document.addEventListener("DOMContentLoaded", () => { load().catch((e) => { $("updated").textContent = String(e); }); });
})();
