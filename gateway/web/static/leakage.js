// Leakage page: one card per metric (today, 7 and 30 days, change against the previous period), a daily chart per
// metric (uPlot, vendored), every count opens the list of conversations behind it. All text goes in as textContent.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { data: null, charts: [] };

  const el = window.gatewayEl;

  async function getJSON(url) {
    const resp = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (resp.status === 401) { location.href = "/login?next=/leakage"; throw new Error("login"); }
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || resp.statusText);
    return data;
  }

  function seconds(v) {
    if (v === null || v === undefined) return "—";
    if (v < 90) return Math.round(v) + " s";
    if (v < 5400) return Math.round(v / 60) + " min";
    return (v / 3600).toFixed(1) + " h";
  }

  function change(n) {
    if (n === 0) return "±0";
    return (n > 0 ? "+" : "−") + Math.abs(n);
  }

  const PERIOD_NAMES = { today: "Today", "7d": "7 days", "30d": "30 days" };

  function countButton(metric, period, p, extra) {
    const m = p.metrics[metric];
    return el("button", { type: "button", class: "count", "data-metric": metric, "data-period": period,
      title: "show the conversations",
      onclick: () => showList(metric, p.from, p.to, PERIOD_NAMES[period], extra) },
      el("span", { class: "period", text: PERIOD_NAMES[period] }),
      el("strong", { class: "num", text: String(m.count) }),
      el("span", { class: "delta", text: change(m.change) + " vs " + m.previous }));
  }

  function chart(node, days, values, label, fractional) {
    if (typeof uPlot === "undefined") { node.textContent = "chart library missing"; return; }
    const xs = days.map((d) => Date.parse(d + "T12:00:00Z") / 1000);
    const opts = {
      width: Math.max(240, node.clientWidth || 280), height: 110,
      legend: { show: false }, cursor: { show: true },
      scales: { x: { time: true } },
      axes: [{ size: 24, space: 60 },
        { size: 44, space: 24, values: (u, vals) => vals.map((v) => (fractional || Number.isInteger(v) ? String(v) : "")) }],
      series: [{}, { label, stroke: "#2f6fdb", fill: "rgba(47,111,219,0.15)", width: 1.5, points: { show: false } }],
    };
    state.charts.push(new uPlot(opts, [xs, values.map((v) => (v === null ? null : v))], node));
  }

  function card(metric, d) {
    const periods = d.periods;
    const sec = el("section", { class: "panel leak-card", "data-metric": metric });
    sec.append(el("h2", { text: d.titles[metric] }));
    sec.append(el("div", { class: "counts" }, ...Object.keys(PERIOD_NAMES).map((p) => countButton(metric, p, periods[p]))));
    const week = periods["7d"];
    const owners = week.metrics[metric].by_owner;
    const names = Object.keys(owners);
    if (names.length) {
      const line = el("p", { class: "muted owners" }, "7 days by owner: ");
      names.forEach((o, i) => {
        if (i) line.append(", ");
        line.append(el("button", { type: "button", class: "link owner", "data-owner": o,
          text: (o || "unassigned") + " " + owners[o],
          onclick: () => showList(metric, week.from, week.to, "7 days", null, o) }));
      });
      sec.append(line);
    }
    if (metric === "automated_not_sent") {
      const reasons = periods["7d"].automated_not_sent_by_reason;
      const ks = Object.keys(reasons);
      sec.append(el("ul", { class: "reasons" }, ...(ks.length ? ks.map((r) => el("li", { text: reasons[r] + " × " + r }))
        : [el("li", { class: "muted", text: "no automated message held back in 7 days" })])));
    }
    const box = el("div", { class: "chart", "data-chart": metric });
    sec.append(box);
    return [sec, () => chart(box, d.daily.days, d.daily.series[metric], metric)];
  }

  function responseCard(d) {
    const sec = el("section", { class: "panel leak-card", "data-metric": "first_response" });
    sec.append(el("h2", { text: "Time to first human response (business time)" }));
    sec.append(el("p", { class: "muted owners", text: "7 days; chart: daily median in minutes" }));
    const tbl = el("table", { class: "leakage-list" });
    tbl.append(el("thead", {}, el("tr", {}, el("th", { text: "Channel" }), el("th", { text: "median" }),
      el("th", { text: "p90" }), el("th", { text: "answered" }), el("th", { text: "none" }))));
    const body = el("tbody");
    const p = d.periods["7d"];
    for (const [ch, v] of Object.entries(p.first_response)) {
      body.append(el("tr", { "data-channel": ch }, el("td", { text: ch }), el("td", { class: "median", text: seconds(v.median_seconds) }),
        el("td", { class: "p90", text: seconds(v.p90_seconds) }),
        el("td", {}, el("button", { type: "button", class: "count", text: String(v.answered),
          onclick: () => showList("first_response", p.from, p.to, "7 days", ch) })),
        el("td", { text: String(v.unanswered) })));
    }
    if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "no customer waited in 7 days" })));
    tbl.append(body);
    sec.append(tbl);
    const box = el("div", { class: "chart", "data-chart": "first_response" });
    sec.append(box);
    return [sec, () => chart(box, d.daily.days, d.daily.first_response_median_seconds.map((v) => (v === null ? null : Math.round(v / 6) / 10)), "median minutes", true)];
  }

  async function showList(metric, from, to, periodName, channel, owner) {
    const params = new URLSearchParams({ metric, from, to });
    if (channel) params.set("channel", channel);
    if (owner !== undefined && owner !== null) params.set("owner", owner);
    const data = await getJSON("/api/v1/leakage/items?" + params.toString());
    const title = (metric === "first_response" ? "First responses" + (channel ? " (" + channel + ")" : "")
      : state.data.titles[metric]) + (owner !== undefined && owner !== null ? " · " + (owner || "unassigned") : "") +
      " · " + periodName + " · " + data.count;
    $("list-title").textContent = title;
    params.set("format", "csv");
    $("list-csv").href = "/api/v1/leakage/items?" + params.toString();
    $("list-body").replaceChildren(...data.items.map((r) => el("tr", { "data-conversation": r.conversation_id },
      el("td", { text: r.local_time }),
      el("td", {}, el("a", { href: "/console#conversation=" + r.conversation_id, text: r.name || ("conversation " + r.conversation_id) })),
      el("td", { text: r.owner || "unassigned" }),
      el("td", { text: r.detail }))));
    if (!data.items.length) $("list-body").append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "nothing in this period" })));
    $("list-panel").hidden = false;
    $("list-panel").scrollIntoView({ block: "nearest" });
  }

  function roiSentence() {
    const d = state.data;
    const p = d.periods[$("roi-period").value];
    const rate = Number($("roi-rate").value) || 0;
    const value = Number($("roi-value").value) || 0;
    const n = p.metrics.recovered.conversations;
    const cur = d.currency || "";
    const total = Math.round(n * rate * value * 100) / 100;
    $("roi-sentence").textContent = n + " recovered conversation" + (n === 1 ? "" : "s") + " (" + p.from + " to " + p.to +
      ") × " + Math.round(rate * 100) + " % close rate × " + cur + value + " average job ≈ " + cur + total +
      ": customers whose missed call or voicemail was returned in time, the share of them that usually becomes a job, and what a job is worth.";
    $("roi-sentence").setAttribute("data-estimate", String(total));
  }

  async function load() {
    const d = await getJSON("/api/v1/leakage/overview");
    state.data = d;
    for (const c of state.charts) c.destroy();
    state.charts = [];
    const t = d.thresholds;
    $("explain").textContent = "Business time in " + d.timezone + ". A missed call counts as returned within " + t.missed_call_minutes +
      " min, a voicemail within " + t.voicemail_minutes + " min, a text within " + t.sms_wait_hours +
      " h; a chat ends after " + t.chat_idle_minutes + " min of silence. Automated texts never count as an answer.";
    const draws = [];
    const cards = [];
    for (const metric of Object.keys(d.titles)) {
      const [node, draw] = card(metric, d);
      cards.push(node); draws.push(draw);
    }
    const [rnode, rdraw] = responseCard(d);
    cards.splice(d.leaks.length, 0, rnode); draws.push(rdraw);
    $("cards").replaceChildren(...cards);
    for (const draw of draws) draw();
    if ($("roi-rate").value === "") $("roi-rate").value = String(d.periods["7d"].roi.close_rate);
    if ($("roi-value").value === "") $("roi-value").value = String(d.periods["7d"].roi.average_job_value);
    roiSentence();
    const month = d.periods["30d"];
    $("daily-csv").href = "/api/v1/leakage?format=csv&from=" + month.from + "&to=" + month.to;
    $("updated").textContent = "as of " + new Date().toLocaleTimeString();
    document.body.setAttribute("data-loaded", "1");
  }

  for (const id of ["roi-rate", "roi-value", "roi-period"]) $(id).addEventListener("input", () => state.data && roiSentence());
  $("roi-form").addEventListener("submit", (e) => e.preventDefault());
  load().catch((e) => { $("updated").textContent = "could not load: " + e.message; });
})();
