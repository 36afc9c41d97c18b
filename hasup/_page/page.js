// hasup status page: polls /status (same origin) and renders with textContent only.
"use strict";
(function () {
  const PERIOD = 500;
  const $ = (id) => document.getElementById(id);
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "-" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function secs(x) { return x === null || x === undefined ? "-" : Number(x).toFixed(3) + " s"; }
  function fill(tbody, rows) {
    const frag = document.createDocumentFragment();
    rows.forEach((r) => frag.appendChild(r));
    tbody.replaceChildren(frag);
  }
  function member(m, local) {
    const tr = document.createElement("tr");
    tr.dataset.node = m.name;
    tr.dataset.state = m.state || "";
    cell(tr, m.name + (local ? " (this node)" : ""));
    cell(tr, m.state, m.state || "");
    cell(tr, (m.priority ?? "-") + " / " + (m.effective_priority ?? "-"));
    cell(tr, m.term);
    cell(tr, m.service, m.service === "failed" ? "bad" : "");
    cell(tr, local ? "now" : (m.live ? secs(m.last_seen_ago) + " ago" : "not live"), local || m.live ? "" : "down");
    cell(tr, (m.notes || []).join("; "), (m.notes || []).length ? "warn" : "");
    return tr;
  }
  function render(s) {
    $("group").textContent = "group " + s.group;
    const notes = [];
    if (s.maintenance) notes.push("maintenance");
    Object.keys(s.alarms || {}).forEach((a) => notes.push("alarm " + a));
    const rows = [member({
      name: s.node, state: s.state, priority: s.priority, effective_priority: s.effective_priority,
      term: s.term, service: s.service, live: true, notes: notes,
    }, true)];
    (s.peers || []).forEach((p) => {
      const pn = [];
      if (p.config_mismatch) pn.push("config differs");
      if (p.active) pn.push("service active");
      if (p.live && p.maintenance) pn.push("maintenance");
      else if (p.live && p.effective_priority === 0) pn.push("not eligible (priority 0)");
      rows.push(member(Object.assign({ notes: pn }, p), false));
    });
    fill($("members").tBodies[0], rows);
    // who holds the service: this node's own flag plus every live peer announcing ACTIVE
    const holders = (s.holder ? [s.node] : []).concat(
      (s.peers || []).filter((p) => p.live && p.active).map((p) => p.name));
    $("holder").textContent = holders.length ? holders.join(" + ") : "none";
    $("holder").className = holders.length > 1 ? "bad" : "";
    $("maintenance").textContent = s.group_maintenance ? "(GROUP MAINTENANCE: no node claims or takes over)"
      : s.maintenance ? "(maintenance: no moves from this node)" : "";
    $("maintenance").className = s.group_maintenance ? "warn" : "";
    const local = [
      ["state", s.state + " for " + secs(s.since_seconds) + (s.reason ? " (" + s.reason + ")" : "")],
      ["service", s.service + (s.backend ? " · " + (typeof s.backend === "string" ? s.backend : JSON.stringify(s.backend)) : "")],
      ["epoch", s.epoch],
    ];
    Object.entries(s.probes || {}).forEach(([k, v]) => local.push(["probe " + k, JSON.stringify(v)]));
    Object.entries(s.alarms || {}).forEach(([k, v]) => local.push(["alarm " + k, JSON.stringify(v)]));
    (s.vips || []).forEach((v) => local.push(["VIP " + v.address, v.held ? "held here" : "not held here"]));
    if (s.witness) local.push(["witness", JSON.stringify(s.witness)]);
    if (s.sync) local.push(["sync", JSON.stringify(s.sync)]);
    const dl = document.createDocumentFragment();
    local.forEach(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v === undefined || v === null ? "-" : String(v);
      dl.appendChild(dt); dl.appendChild(dd);
    });
    $("local").replaceChildren(dl);
    const moves = (s.handovers || []).slice().reverse().map((h) => {
      const tr = document.createElement("tr");
      tr.dataset.term = h.term;
      cell(tr, new Date(Number(h.time) * 1000).toISOString().replace("T", " ").slice(0, 19));
      cell(tr, h.term);
      cell(tr, (h.previous || "-") + " → " + (h.holder || "-"));
      cell(tr, secs(h.no_holder));
      cell(tr, secs(h.two_holders), Number(h.two_holders) > 0 ? "bad" : "");
      return tr;
    });
    fill($("moves").tBodies[0], moves);
    const conn = $("conn");
    conn.textContent = "updated " + new Date().toLocaleTimeString() + " from " + s.node;
    conn.className = "";
    document.body.dataset.updated = String(Date.now());
  }
  async function poll() {
    try {
      const r = await fetch("status", { cache: "no-store", credentials: "same-origin" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
    } catch (e) {
      const conn = $("conn");
      conn.textContent = "no answer from hasup (" + e.message + ")";
      conn.className = "stale";
    }
    setTimeout(poll, PERIOD);
  }
  // Actions: the token lives in this tab's sessionStorage (never a cookie) and goes in the
  // Authorization header of a same-origin POST, which another site's page cannot forge.
  const store = window.sessionStorage;
  function say(text, bad) {
    const r = $("action-result");
    r.textContent = text;
    r.className = bad ? "bad" : "";
  }
  async function command(cmd, body) {
    const r = await fetch("control/" + cmd, {
      method: "POST", cache: "no-store", credentials: "omit",
      headers: {
        "Authorization": "Bearer " + (store.getItem("hasup-token") || ""),
        "Content-Type": "application/json",
        "X-Hasup-Operator": store.getItem("hasup-name") || "",
      },
      body: JSON.stringify(body || {}),
    });
    let doc = {};
    try { doc = await r.json(); } catch (e) { doc = { error: "HTTP " + r.status }; }
    return [r.status, doc];
  }
  function showButtons(on) {
    $("login").hidden = on;
    $("buttons").hidden = !on;
  }
  $("login-btn").addEventListener("click", async () => {
    store.setItem("hasup-name", $("op-name").value.trim());
    store.setItem("hasup-token", $("op-token").value.trim());
    $("op-token").value = "";
    const [status, doc] = await command("check");
    if (status === 200) {
      showButtons(true);
      say("logged in as " + (store.getItem("hasup-name") || "-") + " (" + doc.as + ")");
    } else {
      store.removeItem("hasup-token");
      say("refused: " + (doc.error || "HTTP " + status), true);
    }
  });
  $("logout").addEventListener("click", () => {
    store.removeItem("hasup-token");
    showButtons(false);
    say("logged out");
  });
  document.querySelectorAll("#buttons button[data-cmd]").forEach((b) => {
    b.addEventListener("click", async () => {
      if (b.dataset.ask && !window.confirm(b.dataset.ask)) return;
      const body = b.dataset.on ? { on: b.dataset.on === "true", group: b.dataset.group === "true" } : {};
      say(b.textContent + "…");
      const [status, doc] = await command(b.dataset.cmd, body);
      if (status === 200) say(b.textContent + ": done " + JSON.stringify(doc));
      else {
        say(b.textContent + " refused: " + (doc.error || "HTTP " + status), true);
        if (status === 403) showButtons(false);
      }
    });
  });
  showButtons(Boolean(store.getItem("hasup-token")));
  poll();
})();
