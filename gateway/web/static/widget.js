// Chat widget: paste <script src="https://GATEWAY/widget.js" async></script> into any page.
// Renders in a shadow DOM, talks to the gateway over a websocket, keeps a visitor token in localStorage so a
// returning visitor resumes the conversation, and gives every message a client id so reconnects and reloads never
// lose or duplicate one. All text is inserted with textContent.
"use strict";
(function () {
  if (window.__gatewayChat) return;
  const script = document.currentScript;
  const base = new URL(script && script.src ? script.src : "/widget.js", location.href);
  const wsUrl = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/chat/ws";
  const KEY = "gw-chat:" + base.host;
  const store = {
    get(k, d) { try { const v = localStorage.getItem(KEY + ":" + k); return v === null ? d : JSON.parse(v); } catch (e) { return d; } },
    set(k, v) { try { localStorage.setItem(KEY + ":" + k, JSON.stringify(v)); } catch (e) { /* private mode */ } },
  };

  function newId() {
    const b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c) n.append(typeof c === "string" ? document.createTextNode(c) : c);
    return n;
  }

  const host = el("div", { id: "gateway-chat" });
  const root = host.attachShadow({ mode: "open" });
  root.append(el("link", { rel: "stylesheet", href: new URL("/widget.css", base).href }));
  const log = el("ol", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const notice = el("p", { class: "notice", hidden: true });
  const status = el("p", { class: "status", "aria-live": "polite" });
  const input = el("textarea", { rows: "2", placeholder: "Type your message…", "aria-label": "Message", maxlength: "2000" });
  const sendBtn = el("button", { type: "submit", class: "send", text: "Send" });
  const form = el("form", { class: "composer" }, input, sendBtn);
  const phoneInput = el("input", { type: "tel", autocomplete: "tel", placeholder: "+1 555 123 4567", "aria-label": "Phone number" });
  const handoffLabel = el("span", { class: "handoff-label" });
  // "Call me": the times the office can call, shown in the visitor's own time zone (the gateway checks the pick).
  const timeSelect = el("select", { class: "call-time", "aria-label": "When should we call?" });
  const timeLabel = el("label", { class: "handoff-label call-time-label", hidden: true }, "When: ", timeSelect);
  const handoffForm = el("form", { class: "handoff", hidden: true }, handoffLabel, phoneInput, timeLabel,
    el("button", { type: "submit", text: "OK" }),
    el("button", { type: "button", class: "ghost", text: "Cancel", onclick: () => { handoffForm.hidden = true; } }));
  const codeInput = el("input", { type: "text", inputmode: "numeric", autocomplete: "one-time-code", maxlength: "8",
    placeholder: "123456", "aria-label": "Code from our text" });
  const codeForm = el("form", { class: "handoff code", hidden: true },
    el("span", { class: "handoff-label", text: "Got our text? Type its code to confirm your number:" }), codeInput,
    el("button", { type: "submit", text: "Confirm" }),
    el("button", { type: "button", class: "ghost", text: "Later", onclick: () => { codeForm.hidden = true; } }));
  const textBtn = el("button", { type: "button", class: "ghost", text: "Continue by text" });
  const callBtn = el("button", { type: "button", class: "ghost", text: "Call me" });
  const title = el("h2", { text: "Chat with us" });
  const closeBtn = el("button", { type: "button", class: "close", "aria-label": "Close chat", text: "✕" });
  const panel = el("section", { class: "panel", hidden: true, role: "dialog", "aria-label": "Chat" },
    el("header", {}, title, closeBtn), notice, log, status,
    el("div", { class: "actions" }, textBtn, callBtn), handoffForm, codeForm, form);
  const launcher = el("button", { type: "button", class: "launcher", "aria-expanded": "false", text: "Chat with us" });
  root.append(panel, launcher);

  const shown = new Set();      // event ids and client ids already on screen
  let pending = store.get("pending", []); // [{client_id, body}] not yet acknowledged
  let ws = null, ready = false, delay = 500, handoffMode = null, maxChars = 2000, smsAvailable = true;
  const NO_SMS = "We cannot send text messages right now. We can call you instead, or you can keep chatting here.";

  function addMessage(from, body, id, clientId, extraClass) {
    if ((id && shown.has("e" + id)) || (clientId && shown.has("c" + clientId))) {
      if (id && clientId) {
        shown.add("e" + id);
        const existing = log.querySelector('[data-client="' + clientId + '"]');
        if (existing) existing.classList.remove("sending");
      }
      return;
    }
    if (id) shown.add("e" + id);
    if (clientId) shown.add("c" + clientId);
    // dir=auto: each message takes its own direction; a right-to-left override inside cannot reorder the page.
    const li = el("li", { class: from + (extraClass ? " " + extraClass : ""), "data-client": clientId || null, dir: "auto", text: body });
    log.append(li);
    log.scrollTop = log.scrollHeight;
  }
  const when = new Intl.DateTimeFormat(undefined, {
    weekday: "long", day: "numeric", month: "long", hour: "2-digit", minute: "2-digit",
  });
  function localTime(at) { return when.format(new Date(at * 1000)); }
  // Times the office writes ("we reopen at 13:30") are office time: say so once when the visitor lives elsewhere.
  let zoneTold = false;
  function officeZone(zone) {
    if (zoneTold || !zone) return;
    let mine = "";
    try { mine = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
    const now = new Date();
    let theirs, ours;
    try {
      const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
      theirs = new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: zone }).format(now);
      ours = new Intl.DateTimeFormat("en-GB", { ...opts, timeZone: mine }).format(now);
    } catch (e) { return; }
    if (!mine || theirs === ours) return;
    zoneTold = true;
    const place = zone.split("/").pop().replace(/_/g, " ");
    system("Times in our messages are " + place + " time (it is " + theirs + " there now).");
  }
  function system(text) { log.append(el("li", { class: "system", text })); log.scrollTop = log.scrollHeight; }

  function send(frame) { if (ws && ready) ws.send(JSON.stringify(frame)); }

  function flushPending() { for (const p of pending) send({ type: "message", client_id: p.client_id, body: p.body }); }

  function onFrame(m) {
    switch (m.type) {
      case "welcome":
        ready = true; delay = 500;
        store.set("token", m.token);
        title.textContent = m.business || "Chat with us";
        maxChars = m.max_chars || maxChars;
        smsAvailable = m.sms !== false;
        input.maxLength = maxChars;
        if (!log.childElementCount && m.greeting && !m.history.length) system(m.greeting);
        officeZone(m.timezone);
        for (const h of m.history) addMessage(h.from, h.body, h.id, h.client_id);
        for (const p of pending) addMessage("visitor", p.body, null, p.client_id, "sending");
        notice.hidden = !m.after_hours;
        notice.textContent = m.after_hours_message || "";
        status.textContent = "";
        flushPending();
        break;
      case "ack": {
        status.textContent = "";
        pending = pending.filter((p) => p.client_id !== m.client_id);
        store.set("pending", pending);
        shown.add("e" + m.event_id);
        const li = log.querySelector('[data-client="' + m.client_id + '"]');
        if (li) li.classList.remove("sending");
        break;
      }
      case "message":
        addMessage(m.message.from, m.message.body, m.message.id, m.message.client_id);
        break;
      case "handoff":
        handoffForm.hidden = true;
        status.textContent = "";
        if (m.mode !== "sms" && m.at) {
          const moment = localTime(m.at) + " (your time)";
          if (m.moved === "closed") system("We are closed at the time you picked, so we will call you at the first time we can: " + moment + ".");
          else if (m.moved === "past") system("That time has passed, so we will call you at the next free time: " + moment + ".");
          else system("Thanks! We will call you on " + moment + ".");
        } else if (m.mode === "sms") {
          // The same words whatever became of the text: the widget never tells whose number it is.
          system("Thanks! If we can text that number, we will continue by text from there. You can keep chatting here too.");
          codeForm.hidden = false;
        } else {
          system("Thanks! We will call you soon.");
        }
        break;
      case "call_slots":
        timeSelect.replaceChildren(el("option", { value: "", text: "As soon as you can" }),
          ...(m.slots || []).map((at) => el("option", { value: String(at), text: localTime(at) })));
        timeLabel.hidden = !(m.slots || []).length || handoffMode !== "call";
        break;
      case "verified":
        codeForm.hidden = true;
        status.textContent = "";
        system("Thanks, your number is confirmed.");
        for (const h of m.history || []) addMessage(h.from, h.body, h.id, h.client_id);
        break;
      case "error":
        if (m.client_id) {
          pending = pending.filter((p) => p.client_id !== m.client_id);
          store.set("pending", pending);
          const li = log.querySelector('[data-client="' + m.client_id + '"]');
          if (li) li.classList.add("failed");
        }
        status.textContent = m.message || "Something went wrong.";
        break;
      default: break;
    }
  }

  let pinger = null;
  function connect() {
    ready = false;
    clearInterval(pinger);
    pinger = setInterval(() => send({ type: "ping" }), 25000);
    ws = new WebSocket(wsUrl);
    let opened = false;
    ws.onopen = () => { opened = true; ws.send(JSON.stringify({ type: "hello", token: store.get("token", null) })); };
    ws.onmessage = (e) => { try { onFrame(JSON.parse(e.data)); } catch (err) { /* ignore malformed */ } };
    ws.onclose = (e) => {
      ready = false;
      if (e.code === 4429) { status.textContent = "Chat is busy right now. Please try again later."; return; }
      // Refused before opening: the gateway is at its socket cap (503) or out of reach.
      status.textContent = opened ? "Reconnecting…" : "The chat is busy right now. Trying again shortly…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }

  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.hidden = true;
    store.set("open", true);
    if (!ws) connect();
    input.focus();
  }
  function close() {
    panel.hidden = true;
    launcher.hidden = false;
    launcher.setAttribute("aria-expanded", "false");
    store.set("open", false);
    launcher.focus();
  }
  launcher.addEventListener("click", open);
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    if (body.length > maxChars) { status.textContent = "Please keep messages under " + maxChars + " characters."; return; }
    const clientId = newId();
    pending.push({ client_id: clientId, body });
    store.set("pending", pending);
    addMessage("visitor", body, null, clientId, "sending");
    input.value = "";
    send({ type: "message", client_id: clientId, body });
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  function askPhone(mode) {
    handoffMode = mode;
    handoffLabel.textContent = mode === "sms" ? "Your mobile number:" : "Number to call:";
    timeLabel.hidden = true;
    if (mode === "call") send({ type: "call_slots" });
    handoffForm.hidden = false;
    phoneInput.focus();
  }
  textBtn.addEventListener("click", () => {
    if (smsAvailable) { askPhone("sms"); return; }
    system(NO_SMS);
    askPhone("call");
  });
  callBtn.addEventListener("click", () => askPhone("call"));
  handoffForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const phone = phoneInput.value.trim();
    if (!phone) return;
    // The same request again (a double click, a retry) keeps its client id: the gateway answers it once.
    const at = handoffMode === "call" && !timeLabel.hidden && timeSelect.value ? Number(timeSelect.value) : null;
    const key = handoffMode + ":" + phone + (at ? "@" + at : "");
    const ids = store.get("handoffs", {});
    if (!ids[key]) { ids[key] = newId(); store.set("handoffs", ids); }
    const frame = { type: handoffMode === "sms" ? "continue_by_text" : "call_me", client_id: ids[key], phone };
    if (at) frame.at = at;
    send(frame);
  });

  codeForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const code = codeInput.value.trim();
    if (!code) return;
    send({ type: "verify_code", client_id: newId(), code });
  });

  window.__gatewayChat = { open, close };
  const mount = () => { document.body.append(host); if (store.get("open", false)) open(); };
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
