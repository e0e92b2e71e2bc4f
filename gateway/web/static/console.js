// Staff console: inbox, one timeline per customer, reply box, notes, search, live updates and screen-pop.
// Every piece of customer text is put into the page with textContent, never as HTML.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const myExt = document.querySelector('meta[name="staff-extension"]').content;
  const $ = (id) => document.getElementById(id);
  const state = { current: null, seen: new Set(), data: null, staff: [], inboxTimer: null, segTimer: null };

  const el = window.gatewayEl;

  async function api(method, url, body) {
    const opts = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
    const resp = await fetch(url, opts);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401) { window.location.href = "/login?next=/console"; }
    if (!resp.ok) {
      const err = new Error((data && data.error) || ("HTTP " + resp.status));
      err.status = resp.status; err.data = data;
      throw err;
    }
    return data;
  }

  const CHANNEL = { chat: "Chat", sms: "SMS", voice: "Call", email: "E-mail", note: "Note", system: "System" };
  function when(ts) {
    if (!ts) return "";
    const d = new Date(ts * 1000);
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    return sameDay ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  function waited(ts) {
    if (!ts) return "";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 60) return "waiting <1 min";
    if (s < 3600) return "waiting " + Math.floor(s / 60) + " min";
    if (s < 86400) return "waiting " + Math.floor(s / 3600) + " h";
    return "waiting " + Math.floor(s / 86400) + " d";
  }
  // The server's label: name, number or sender as the channel gave it; "Web visitor" only for a chat visitor.
  function nameOf(row) { return row.label || row.display_name || row.phone || "Unknown contact"; }

  // ---------------------------------------------------------------------------------------------- inbox
  async function loadInbox() {
    const data = await api("GET", "/api/v1/inbox");
    const list = $("inbox");
    list.replaceChildren();
    for (const row of data.inbox) {
      const last = row.last_event;
      const btn = el("button", { type: "button", "data-id": row.conversation_id,
        "aria-current": state.current === row.conversation_id ? "true" : "false",
        onclick: () => openConversation(row.conversation_id) },
        el("span", { class: "name" }, el("bdi", { text: nameOf(row) }),
          row.awaiting_since ? el("span", { class: "wait", text: waited(row.awaiting_since) }) : null),
        el("span", {},
          row.urgent ? el("span", { class: "badge urgent", text: "urgent" }) : null,
          last ? el("span", { class: "badge", text: CHANNEL[last.channel] || last.channel }) : null,
          row.intent ? el("span", { class: "badge", text: row.intent }) : null),
        el("span", { class: "preview", text: last ? (last.body || last.kind.replace("_", " ")) : "" }));
      list.append(el("li", {}, btn));
    }
    if (!data.inbox.length) list.append(el("li", { class: "muted", text: "No conversations yet." }));
  }
  function refreshInboxSoon() {
    clearTimeout(state.inboxTimer);
    state.inboxTimer = setTimeout(() => loadInbox().catch(console.error), 150);
  }

  // ------------------------------------------------------------------------------------------- timeline
  function transcriptNode(ev) {
    const words = ev.meta && Array.isArray(ev.meta.words) ? ev.meta.words : null;
    const box = el("div", { class: "transcript" });
    if (!words) { box.textContent = ev.body; return box; }
    const threshold = typeof ev.meta.low_confidence_threshold === "number" ? ev.meta.low_confidence_threshold : 0.6;
    words.forEach((w, i) => {
      const conf = typeof w.conf === "number" ? w.conf : 1;
      const low = typeof w.low === "boolean" ? w.low : conf < threshold;
      const span = el("span", { class: low ? "lowconf" : null, title: low ? "unsure (" + Math.round(conf * 100) + "%)" : null, text: String(w.word) });
      if (i) box.append(" ");
      box.append(span);
    });
    return box;
  }

  const DECISION = { sent: "sent", suppressed: "not sent", deferred: "scheduled", cancelled: "cancelled" };

  function eventNode(ev) {
    const label = CHANNEL[ev.channel] || ev.channel;
    const meta = ev.meta || {};
    let cls = "system", head = label, body = ev.body;
    const extra = [];
    switch (ev.kind) {
      case "message_in": cls = "in"; head = label; break;
      case "message_out": cls = "out";
        head = (ev.author ? ev.author : "Sent") + " · " + label + (ev.delivery ? " · " + ev.delivery : "")
          + (meta.automated ? " · automated" : "");
        // Sent outside the number policy or to a claimed number: say so beside the message, as text.
        if (meta.number_warning) {
          extra.push(el("div", { class: "warn", text: "Number check: " + String(meta.number_warning)
            + (meta.number_confirmed_by ? " (confirmed by " + String(meta.number_confirmed_by) + ")" : "") }));
        }
        break;
      case "note": cls = "note"; head = "Note by " + (ev.author || "staff"); break;
      case "voicemail": cls = "call"; head = "Voicemail" + (meta.duration ? " · " + Math.round(meta.duration) + " s" : "");
        body = ev.body || "";
        extra.push(el("audio", { controls: true, preload: "none", src: "/media/voicemail/" + ev.id }));
        if (meta.transcript) extra.push(el("div", { class: "transcript", text: String(meta.transcript) }));
        if (meta.transcription === "failed") {
          // The reason carries its fix; staff can try again (a damaged recording says a retry cannot help).
          extra.push(el("div", { class: "transcription-error", dir: "auto",
            text: "Transcription failed: " + String(meta.transcription_error || meta.error || "unknown reason") }));
          extra.push(el("button", { type: "button", class: "retry-transcription", "data-event": String(ev.id),
            onclick: () => retryTranscription(ev.id), text: "Retry transcription" }));
        }
        break;
      case "transcript": cls = "call"; head = "Transcript" + (meta.confidence ? " · " + Math.round(meta.confidence * 100) + "% sure" : "");
        body = null; extra.push(transcriptNode(ev)); break;
      case "call_missed": cls = "call"; head = "Missed call"; break;
      case "call_answered": cls = "call"; head = "Call answered" + (meta.extension ? " on ext. " + meta.extension : ""); break;
      case "call_ended": cls = "call"; head = "Call ended"; break;
      case "call_abandoned": cls = "call"; head = "Caller hung up quickly"; break;
      case "call_ringing": cls = "call"; head = "Incoming call"; break;
      case "handoff": cls = "system"; head = "Hand-off";
        if (meta.handoff === "call_me" && state.data && state.data.can_call) {
          extra.push(el("button", { type: "button", onclick: startCall, text: "Call now" }));
        }
        break;
      case "merge": cls = "system"; head = "Contacts merged";
        if (typeof meta.merge_id === "number") {
          extra.push(el("button", { type: "button", class: "undo-merge", "data-merge": String(meta.merge_id),
            onclick: () => undoMerge(meta.merge_id), text: "Undo merge" }));
        }
        break;
      case "automated": {
        // A rule's decision: sent, suppressed (with the reason), deferred (until when) or cancelled.
        const decision = String(meta.decision || "");
        cls = "automated decision-" + (decision || "unknown");
        head = "Automated · " + String(meta.rule || "rule").replace(/_/g, " ") + " · " + (DECISION[decision] || decision);
        body = ev.body;
        if (typeof meta.due_at === "number") extra.push(el("div", { class: "muted", text: "due " + when(meta.due_at) }));
        break;
      }
      case "spine": cls = "spine-change";
        head = "Spine · " + (meta.set_by === "extractor" ? "read from " + (meta.source || "a message") : "by " + (ev.author || meta.set_by || "staff"));
        break;
      default: cls = "system"; head = ev.kind.replace("_", " ");
    }
    // Found in Asterisk's records after the gateway was down (meta.recovered = "after downtime").
    if (typeof meta.recovered === "string") head += " · recovered " + meta.recovered;
    return el("li", { class: cls, "data-event": ev.id },
      el("span", { class: "meta" }, head + " · " + when(ev.occurred_at)),
      // <bdi>: customer text is isolated; its direction (or an RTL override in it) cannot reorder the entry.
      body ? el("bdi", { class: "body", text: body }) : null, ...extra);
  }

  async function retryTranscription(eventId) {
    try {
      await api("POST", "/api/v1/voicemails/" + eventId + "/transcription/retry");
      if (state.current) await openConversation(state.current);
    } catch (err) {
      window.alert(String(err && err.message ? err.message : err));
    }
  }

  async function undoMerge(mergeId) {
    if (!window.confirm("Split these contacts again? Each gets its own timeline back.")) return;
    try {
      await api("POST", "/api/v1/merges/" + mergeId + "/undo");
      if (state.current) await openConversation(state.current);
    } catch (err) {
      window.alert(String(err && err.message ? err.message : err));
    }
  }

  function appendEvent(ev) {
    if (state.seen.has(ev.id)) return;
    state.seen.add(ev.id);
    $("timeline").append(eventNode(ev));
    const tl = $("timeline");
    tl.lastElementChild.scrollIntoView({ block: "nearest" });
  }

  async function openConversation(id) {
    const data = await api("GET", "/api/v1/conversations/" + id);
    state.current = data.summary.conversation_id;
    state.data = data;
    state.seen = new Set();
    $("empty").hidden = true;
    $("conv").hidden = false;
    const s = data.summary;
    $("conv-name").textContent = nameOf(s);
    $("conv-name").setAttribute("dir", "auto");
    const ids = (data.contact && data.contact.identities ? data.contact.identities : [])
      .map((i) => (i.kind === "chat" ? "web chat" : i.value)).join(" · ");
    $("conv-ids").textContent = ids;
    showClaims(data.claims || []);
    renderSpine(data.spine);
    loadPromises();
    $("timeline").replaceChildren();
    data.timeline.forEach(appendEvent);
    const sel = $("reply-channel");
    sel.replaceChildren(...data.reply.channels.map((c) => el("option", { value: c, text: CHANNEL[c] || c })));
    sel.value = data.reply.default_channel;
    $("call-btn").hidden = !data.can_call;
    updateWarnings();
    refreshInboxSoon();
  }

  // Numbers a visitor typed are claims: shown as such, with the known contact they match and a one-click
  // confirmation (which merges with that contact; the merge can be undone from the timeline).
  function showClaims(claims) {
    const box = $("claims");
    box.replaceChildren(...claims.map((c) => {
      const li = el("li", { class: "claim " + (c.verified ? "verified" : "unverified"), "data-claim": String(c.id) },
        el("span", { text: c.label }));
      if (c.state === "pending") {
        const match = c.suggested_contact;
        if (match) li.append(el("span", { class: "muted", text: " · matches " + (match.display_name || c.value) }));
        li.append(el("button", { type: "button", class: "confirm-claim", onclick: () => confirmClaim(c.id),
          text: match ? "Confirm and merge" : "Confirm number" }));
      }
      return li;
    }));
    box.hidden = claims.length === 0;
  }

  // Promises heard on calls and in replies: proposed until a person confirms them (then they are the next step).
  async function loadPromises() {
    const conv = state.current;
    let list = [];
    try { list = (await api("GET", "/api/v1/conversations/" + conv + "/promises")).promises; } catch (e) { console.error(e); }
    if (conv !== state.current) return;
    const box = $("promises");
    box.replaceChildren(...list.filter((p) => p.status !== "dismissed").map((p) => {
      const due = p.due ? " · due " + new Date(p.due * 1000).toLocaleString() : "";
      const li = el("li", { class: "promise " + p.status, "data-promise": String(p.id) },
        el("strong", { text: p.step }), el("span", { class: "muted", text: due + " · \u201c" + p.phrase + "\u201d" }));
      if (p.status === "proposed") {
        li.append(el("button", { type: "button", class: "confirm-promise", text: "Confirm", onclick: () => decidePromise(p.id, "confirm") }),
          el("button", { type: "button", class: "link", text: "Not a promise", onclick: () => decidePromise(p.id, "dismiss") }));
      } else {
        li.append(el("span", { class: "muted", text: " · confirmed by " + (p.decided_by || "") }));
      }
      return li;
    }));
    box.hidden = box.children.length === 0;
  }
  async function decidePromise(id, what) {
    try { await api("POST", "/api/v1/promises/" + id + "/" + what); } catch (e) { $("reply-error").textContent = e.message; }
    await loadPromises();
    await reloadSpine();
  }

  async function confirmClaim(claimId) {
    try {
      const done = await api("POST", "/api/v1/claims/" + claimId + "/confirm");
      await openConversation(done.conversation_id);
    } catch (err) {
      window.alert(String(err && err.message ? err.message : err));
    }
  }

  function fillOwners(owner, id) {
    const sel = $(id || "owner");
    sel.replaceChildren(el("option", { value: "", text: "Nobody" }),
      ...state.staff.map((s) => el("option", { value: s.username, text: s.display_name })));
    if (owner && !state.staff.some((s) => s.username === owner)) sel.append(el("option", { value: owner, text: owner }));
    sel.value = owner || "";
  }

  // ------------------------------------------------------------------------------------------- the spine
  const SOURCE = { sms: "SMS", chat: "chat", voicemail: "voicemail", staff: "staff", api: "API", last_used: "last used" };
  function localInput(ts) {
    if (!ts) return "";
    const d = new Date(ts * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  function renderSpine(view) {
    if (!view) return;
    state.spine = view;
    const sp = view.spine;
    $("spine-line").textContent = view.summary || "";
    const ep = sp.episode;
    // The episode the customer is in now: what the rules' per-episode budget counts.
    $("spine-episode").textContent = ep ? "This episode: " + ep.contacts.length + " contact" + (ep.contacts.length === 1 ? "" : "s")
      + " since " + when(ep.started_at) + " (" + ep.contacts.map((c) => CHANNEL[c.channel] || c.channel)
        .filter((v, i, a) => a.indexOf(v) === i).join(", ") + ") · " + ep.automated_sent + " automated text"
      + (ep.automated_sent === 1 ? "" : "s") + " sent" : "";
    const f = $("fields");
    const intent = $("intent");
    intent.replaceChildren(el("option", { value: "", text: "Not known yet" }),
      ...view.intents.map((i) => el("option", { value: i, text: i })));
    intent.value = sp.intent || "";
    f.urgent.checked = !!sp.urgent;
    f.next_step.value = sp.next_step || "";
    f.next_step_due.value = localInput(sp.next_step_due);
    fillOwners(sp.owner, "owner");
    fillOwners(sp.next_step_owner, "step-owner");
    const pref = $("preference");
    pref.replaceChildren(el("option", { value: "", text: "No preference" }),
      ...view.channel_preferences.map((c) => el("option", { value: c, text: CHANNEL[c] || c })));
    pref.value = sp.channel_preference || "";
    $("preference-why").textContent = sp.preference_why ? "why: " + sp.preference_why : "";
    const rows = Object.values(sp.facts || {}).map((fact) => {
      const value = fact.value && typeof fact.value === "object" ? (fact.value.text || JSON.stringify(fact.value)) : String(fact.value);
      const by = fact.set_by === "extractor" ? "read from " + (SOURCE[fact.source] || fact.source) : (SOURCE[fact.source] || fact.source) + " · " + fact.set_by;
      return el("tr", { "data-fact": fact.name },
        el("th", { scope: "row", text: fact.name.replace(/_/g, " ") }),
        el("td", { text: value }),
        el("td", { class: "src", text: by + " · " + when(fact.at) + (fact.confidence < 1 ? " · " + Math.round(fact.confidence * 100) + "% sure" : "") }),
        el("td", {}, el("button", { type: "button", class: "link", text: "Edit", onclick: () => { $("fact-name").value = fact.name; $("fact-value").value = value; $("fact-value").focus(); } }),
          " ", el("button", { type: "button", class: "link", text: "Remove", onclick: () => removeFact(fact.name) })));
    });
    $("facts").replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: "4", text: "No facts captured yet" }))]));
  }
  async function reloadSpine() {
    if (state.current === null) return;
    try { renderSpine(await api("GET", "/api/v1/conversations/" + state.current + "/spine")); } catch (e) { console.error(e); }
  }
  async function removeFact(name) {
    try { renderSpine(await api("DELETE", "/api/v1/conversations/" + state.current + "/facts/" + encodeURIComponent(name))); }
    catch (e) { $("reply-error").textContent = e.message; }
  }

  function updateWarnings() {
    const d = state.data;
    const sms = $("reply-channel").value === "sms";
    $("warn-quiet").hidden = !(sms && d && d.reply.quiet_hours);
    $("warn-optout").hidden = !(sms && d && d.reply.opted_out);
    updateSegments();
  }

  function updateSegments() {
    clearTimeout(state.segTimer);
    const out = $("segments");
    if ($("reply-channel").value !== "sms") { out.textContent = ""; return; }
    const body = $("reply-body").value;
    state.segTimer = setTimeout(async () => {
      try {
        const r = await api("POST", "/api/v1/sms/segments", { body });
        out.textContent = body ? r.chars + " characters · " + r.segments + " SMS" + (r.segments === 1 ? "" : " parts")
          + (r.encoding === "ucs2" ? " (Unicode)" : "") : "";
      } catch (e) { out.textContent = ""; }
    }, 120);
  }

  async function sendRecap() {
    $("reply-error").textContent = "";
    try { await api("POST", "/api/v1/conversations/" + state.current + "/recap", {}); }
    catch (e) { $("reply-error").textContent = e.message; }
  }

  async function startCall() {
    try { await api("POST", "/api/v1/conversations/" + state.current + "/call", {}); }
    catch (e) { $("reply-error").textContent = e.message; }
  }

  // ------------------------------------------------------------------------------------------ screen-pop
  const cards = new Map();
  function showCard(msg) {
    const s = msg.summary || {};
    const who = s.display_name || msg.caller_name || msg.caller || "Unknown caller";
    const dl = el("dl", {});
    const add = (k, v) => { if (v) dl.append(el("dt", { text: k }), el("dd", { text: String(v) })); };
    const number = s.phone || msg.caller;
    if (number !== who) add("Number", number);
    add("Intent", s.intent);
    add("Next step", s.next_step);
    for (const [ch, ev] of Object.entries(s.last_by_channel || {})) add("Last " + (CHANNEL[ch] || ch), ev.body || ev.kind.replace("_", " "));
    if (s.latest_transcript) add("Voicemail", s.latest_transcript.body);
    const h = msg.handoff;
    if (h) {
      add("Wants", h.wants);
      const shown = Object.values(s.last_by_channel || {}).map((ev) => ev.body);
      if (!shown.includes(h.customer_words)) add("Said", h.customer_words);
      if (h.open_question && h.open_question !== h.customer_words) add("Asked", h.open_question);
      if (h.knows && h.knows.length) add("We know", h.knows.join("; "));
      const promised = (h.promises || []).map((p) => p.step + (p.status === "proposed" ? " (to confirm)" : ""));
      if (h.next_step && !promised.includes(h.next_step)) promised.unshift(h.next_step);
      if (promised.length) add("Promised", promised.join("; "));
      if (h.preferred_channel) add("Prefers", (CHANNEL[h.preferred_channel] || h.preferred_channel) + (h.preferred_because ? " (" + h.preferred_because + ")" : ""));
      if (h.quiet_hours) add("Now", "quiet hours: do not text");
    }
    const stateLine = el("span", { class: "state", text: "Ringing" });
    const card = el("article", { class: "card", "data-call": msg.call_id, "aria-label": "Incoming call from " + who },
      el("button", { type: "button", class: "link close", "aria-label": "Dismiss", text: "✕", onclick: () => { card.remove(); cards.delete(msg.call_id); } }),
      stateLine, el("h2", { text: who }), msg.headline ? el("p", { class: "headline", text: msg.headline }) : null, dl,
      msg.conversation_id ? el("button", { type: "button", text: "Open timeline", onclick: () => openConversation(msg.conversation_id) }) : null);
    card.stateLine = stateLine;
    const old = cards.get(msg.call_id);
    if (old) old.remove();
    cards.set(msg.call_id, card);
    $("calls").prepend(card);
  }

  function onWs(msg) {
    switch (msg.type) {
      case "hello": break;
      case "event":
        if (msg.event && msg.event.conversation_id === state.current) {
          appendEvent(msg.event);
          if (msg.event.kind === "spine" || msg.event.kind === "message_in") reloadSpine();
          if (msg.event.meta && msg.event.meta.promise_id) loadPromises();
        }
        refreshInboxSoon();
        break;
      case "conversation":
      case "merged":
        refreshInboxSoon();
        break;
      case "call_ringing": showCard(msg); break;
      case "call_answered": {
        const card = cards.get(msg.call_id);
        if (!card) break;
        if (msg.extension && msg.extension !== myExt) { card.remove(); cards.delete(msg.call_id); }
        else card.stateLine.textContent = "In call";
        break;
      }
      case "live_transcript": {
        // Partial words of the call, per side, replaced as they grow (text only, never HTML).
        const card = cards.get(msg.call_id);
        if (!card) break;
        if (!card.live) {
          card.live = el("div", { class: "live-words", "aria-live": "polite", "aria-label": "Live transcript" });
          card.append(card.live);
        }
        const side = msg.side === "staff" ? "staff" : "caller";
        let line = card.live.querySelector("p[data-side=" + side + "]");
        if (!line) {
          line = el("p", { "data-side": side });
          card.live.append(line);
        }
        line.textContent = (side === "staff" ? "You: " : "Caller: ") + msg.text;
        break;
      }
      case "call_ended": {
        const card = cards.get(msg.call_id);
        if (!card) break;
        card.classList.add("ended");
        card.stateLine.textContent = "Call ended" + (msg.outcome ? " · " + msg.outcome : "");
        if (msg.conversation_id && msg.conversation_id === state.current) openConversation(state.current);
        setTimeout(() => { card.remove(); cards.delete(msg.call_id); }, 120000);
        break;
      }
      default: break;
    }
  }

  let delay = 500;
  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/staff/ws");
    const live = $("live");
    ws.onopen = () => { delay = 500; live.textContent = "live"; live.className = "live ok"; refreshInboxSoon(); };
    ws.onmessage = (e) => { try { onWs(JSON.parse(e.data)); } catch (err) { console.error(err); } };
    ws.onclose = () => {
      live.textContent = "reconnecting…"; live.className = "live down";
      setTimeout(connect, delay); delay = Math.min(delay * 2, 15000);
    };
  }

  // ----------------------------------------------------------------------------------------------- forms
  $("reply-channel").addEventListener("change", updateWarnings);
  $("reply-body").addEventListener("input", updateSegments);
  $("reply-body").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("reply").requestSubmit(); }
  });
  $("reply").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = $("reply-body").value;
    if (!body.trim() || state.current === null) return;
    $("reply-error").textContent = "";
    const payload = { body, channel: $("reply-channel").value, override_optout: $("override").checked };
    try {
      try {
        await api("POST", "/api/v1/conversations/" + state.current + "/messages", payload);
      } catch (err) {
        // The number is outside the number policy or only claimed: ask once, then send with the confirmation.
        if (!(err.data && err.data.needs_confirmation) || !window.confirm(err.message)) throw err;
        await api("POST", "/api/v1/conversations/" + state.current + "/messages", { ...payload, confirm_number: true });
      }
      $("reply-body").value = "";
      $("override").checked = false;
      updateSegments();
    } catch (err) {
      $("reply-error").textContent = err.message;
      if (err.data && err.data.opted_out) { state.data.reply.opted_out = true; updateWarnings(); }
    }
  });
  $("fields").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target;
    const sp = state.spine ? state.spine.spine : {};
    // Unchanged due field: send the stored moment back, so saving other fields never moves it.
    const due = f.next_step_due.value === localInput(sp.next_step_due) ? (sp.next_step_due || null)
      : (f.next_step_due.value ? new Date(f.next_step_due.value).getTime() / 1000 : null);
    const body = { intent: f.intent.value || null, urgent: f.urgent.checked, next_step: f.next_step.value || null,
      next_step_due: due, next_step_owner: f.next_step_owner.value || null, owner: f.owner.value || null };
    const pref = f.channel_preference.value || null;
    if (pref !== ((state.spine && state.spine.spine.channel_preference) || null)) body.channel_preference = pref;
    try {
      renderSpine(await api("PATCH", "/api/v1/conversations/" + state.current + "/spine", body));
      refreshInboxSoon();
    } catch (err) { $("reply-error").textContent = err.message; }
  });
  $("fact-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("fact-name").value.trim(), value = $("fact-value").value.trim();
    if (!name || !value || state.current === null) return;
    try {
      renderSpine(await api("PUT", "/api/v1/conversations/" + state.current + "/facts/" + encodeURIComponent(name), { value }));
      $("fact-name").value = ""; $("fact-value").value = "";
    } catch (err) { $("reply-error").textContent = err.message; }
  });
  // Staff start a thread: a text or a call to a number, landing in that number's conversation.
  $("new-btn").addEventListener("click", () => { $("new-form").hidden = !$("new-form").hidden; if (!$("new-form").hidden) $("new-phone").focus(); });
  async function startThread(call) {
    const phone = $("new-phone").value.trim(), body = $("new-body").value;
    $("new-error").textContent = "";
    const req = { phone };
    if (body.trim()) req.body = body;
    if (call) req.call = true;
    try {
      const r = await api("POST", "/api/v1/conversations", req);
      $("new-phone").value = ""; $("new-body").value = ""; $("new-form").hidden = true;
      await openConversation(r.conversation_id);
    } catch (err) { $("new-error").textContent = err.message; }
  }
  $("new-form").addEventListener("submit", (e) => { e.preventDefault(); startThread(false); });
  $("new-call").addEventListener("click", () => startThread(true));
  $("note").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = $("note-body").value;
    if (!body.trim()) return;
    try { await api("POST", "/api/v1/conversations/" + state.current + "/notes", { body }); $("note-body").value = ""; }
    catch (err) { $("reply-error").textContent = err.message; }
  });
  $("call-btn").addEventListener("click", startCall);
  $("recap-btn").addEventListener("click", sendRecap);

  let searchTimer = null;
  function markSnippet(hit) {
    // The server splits the snippet into parts ({text, hit}); customer text is never parsed for markers.
    const frag = document.createDocumentFragment();
    const parts = Array.isArray(hit.snippet_parts) ? hit.snippet_parts : [{ text: hit.snippet || hit.event.body || "", hit: false }];
    parts.forEach((p) => frag.append(p.hit ? el("mark", { text: String(p.text) }) : document.createTextNode(String(p.text))));
    const box = el("bdi", {});
    box.append(frag);
    return box;
  }
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(async () => {
      const q = $("search").value.trim();
      const box = $("search-results");
      if (!q) { box.hidden = true; return; }
      const data = await api("GET", "/api/v1/search?q=" + encodeURIComponent(q));
      $("search-count").textContent = data.results.length + " result" + (data.results.length === 1 ? "" : "s");
      $("search-list").replaceChildren(...data.results.map((hit) => el("li", { tabindex: "0", role: "button",
          onclick: () => openConversation(hit.event.conversation_id),
          onkeydown: (e) => { if (e.key === "Enter") openConversation(hit.event.conversation_id); } },
          el("strong", {}, el("bdi", { text: nameOf(hit) })), " ",
          el("span", { class: "badge", text: CHANNEL[hit.event.channel] || hit.event.channel }),
          el("div", { class: "snippet" }, markSnippet(hit)))));
      box.hidden = false;
    }, 200);
  });
  $("search-form").addEventListener("submit", (e) => e.preventDefault());

  api("GET", "/api/v1/staff").then((d) => { state.staff = d.staff; }).catch(() => {});
  loadInbox().catch(console.error);
  // Deep link from other pages (the leakage lists): /console#conversation=ID opens that conversation.
  function openFromHash() {
    const m = /^#conversation=(\d+)$/.exec(location.hash);
    if (m) openConversation(Number(m[1])).catch(console.error);
  }
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
  setInterval(() => refreshInboxSoon(), 30000);
  connect();
})();
