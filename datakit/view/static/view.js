// datakit view: the list, one record, and verdicts. Plain DOM; every text goes in as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = ["q", "status", "reason", "teacher", "lang", "min", "max", "reviewed", "sort"];
const S = { page: 0, size: 50, total: 0, items: [], sel: -1, rec: null, editing: null, statusTimer: null };

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "cls") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const badge = (text, cls) => h("span", { cls: "badge " + (cls || "") }, text);
const fmt = (x) => (x === null || x === undefined ? "–" : typeof x === "number" ? String(Math.round(x * 100) / 100) : String(x));

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-Datakit-View": "1" } };
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: r.statusText }; }
  if (!r.ok) throw new Error((data && data.error) || r.statusText);
  return data;
}

let toastTimer = null;
function toast(msg, error) {
  const t = $("toast");
  t.textContent = msg;
  t.className = "show" + (error ? " error" : "");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = ""; }, error ? 6000 : 1800);
}

// ------------------------------------------------------------------ state in the address

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const f of FILTERS) if ($(f)) $(f).value = p.get(f) || (f === "sort" ? "file" : "");
  S.page = Math.max(0, parseInt(p.get("page") || "0", 10) || 0);
  return p.get("id");
}

function writeHash() {
  const p = new URLSearchParams();
  for (const f of FILTERS) if ($(f).value && !(f === "sort" && $(f).value === "file")) p.set(f, $(f).value);
  if (S.page) p.set("page", S.page);
  if (S.rec) p.set("id", S.rec.machine.id);
  history.replaceState(null, "", "#" + p.toString());
}

function query() {
  const p = new URLSearchParams();
  for (const f of FILTERS) if ($(f).value) p.set(f, $(f).value);
  p.set("page", S.page);
  p.set("size", S.size);
  return p.toString();
}

// ------------------------------------------------------------------ the list

function rowEl(it, i) {
  const human = it.review ? badge(it.review === "rejected" ? "✗ human" : "✓ human", it.review === "rejected" ? "bad" : "human") : null;
  return h("li", { "data-id": it.id, cls: i === S.sel ? "sel" : "", onclick: () => select(i) },
    h("div", { cls: "row1" },
      h("span", { cls: "id" }, it.id),
      it.status === "accepted" ? badge("accepted", "ok") : badge(it.reason || "rejected", "bad"),
      it.curation ? badge(it.curation, "warn") : null,
      human, it.edited ? badge("edited", "human") : null, it.chose ? badge("pair", "human") : null,
      h("span", { cls: "grow" }),
      it.teacher ? h("span", {}, it.teacher) : null, h("span", {}, it.lang),
      it.score !== null ? badge(fmt(it.score), "score") : null),
    h("div", { cls: "snip" }, it.instruction),
    it.output ? h("div", { cls: "snip out" }, it.output) : null);
}

async function loadList(keepSel) {
  const seq = (S.listSeq = (S.listSeq || 0) + 1);
  let data;
  try { data = await api("/api/records?" + query()); } catch (e) { toast(e.message, true); return; }
  if (seq !== S.listSeq) return;  // a newer request is on its way
  S.items = data.items;
  S.total = data.total;
  if (!keepSel) S.sel = -1;
  const rows = $("rows");
  rows.replaceChildren(...S.items.map(rowEl));
  S.more = data.more;
  const from = S.items.length ? S.page * S.size + 1 : 0, to = S.page * S.size + S.items.length;
  const total = S.total.toLocaleString() + (S.more ? "+" : "");
  $("count").textContent = `${total} records` + (data.search === "scan" && $("q").value ? " (search index still building)" : "");
  $("pageinfo").textContent = `${from.toLocaleString()}–${to.toLocaleString()} of ${total}`;
  $("prev").disabled = S.page === 0;
  $("next").disabled = S.more ? S.items.length < S.size : to >= S.total;
  writeHash();
}

function refilter() { S.page = 0; loadList(false); }

async function select(i, focusId) {
  if (i < 0 || i >= S.items.length) return;
  S.sel = i;
  for (const [k, li] of [...$("rows").children].entries()) li.classList.toggle("sel", k === i);
  const li = $("rows").children[i];
  if (li) li.scrollIntoView({ block: "nearest" });
  await openRecord(focusId || S.items[i].id);
}

async function move(delta) {
  if (S.editing) return;
  const next = S.sel + delta;
  if (next >= S.items.length && !$("next").disabled) { S.page++; await loadList(false); return select(0); }
  if (next < 0 && S.page > 0) { S.page--; await loadList(false); return select(S.items.length - 1); }
  return select(Math.max(0, Math.min(S.items.length - 1, next)));
}

// ------------------------------------------------------------------ one record

async function openRecord(id) {
  try { S.rec = await api("/api/record?id=" + encodeURIComponent(id)); } catch (e) { toast(e.message, true); return; }
  S.editing = null;
  renderRecord();
  writeHash();
}

function current() { return S.rec.reviewed || S.rec.machine; }

function renderRecord() {
  const d = S.rec, m = d.machine, cur = current(), rv = d.review;
  const bar = h("div", { cls: "bar" },
    h("h2", {}, m.id),
    m.status === "accepted" ? badge("accepted by generate", "ok") : badge("rejected: " + (m.reason || "?"), "bad"),
    ...d.curation.removals.map((r) => badge("removed: " + r.reason, "warn")),
    rv ? badge((rv.status === "rejected" ? "✗ rejected by " : "✓ accepted by ") + (rv.reviewer || "a person") +
      (rv.reason ? ": " + rv.reason : ""), rv.status === "rejected" ? "bad" : "human") : badge("not reviewed"),
    h("span", { cls: "grow" }),
    h("button", { cls: "btn accept", id: "accept-btn", type: "button", onclick: accept }, "Accept", h("kbd", {}, "a")),
    h("button", { cls: "btn reject", id: "reject-btn", type: "button", onclick: startReject }, "Reject", h("kbd", {}, "r")),
    h("button", { cls: "btn", id: "edit-btn", type: "button", onclick: () => startEdit("output") }, "Edit output", h("kbd", {}, "e")));
  const parts = [bar, taskCard(m, cur)];
  if ((cur.candidates || []).length && cur.candidates.some((c) => c.id !== "output" || c.judge)) parts.push(candidatesCard(cur));
  const judge = cur.judge || m.judge;
  if (judge && (judge.pairwise || []).length) parts.push(pairwiseCard(judge.pairwise));
  if (judge && judge.pair) parts.push(pairCard(m.judge ? m.judge.pair : null, cur.judge ? cur.judge.pair : null));
  parts.push(filtersCard(m, d.nearest), curationCard(d.curation), lineageCard(m.lineage || {}), historyCard(d.history));
  $("detail").replaceChildren(...parts);
  $("detail").scrollTop = 0;
}

function textField(label, key, machineText, shownText, editable, extra) {
  const editedNote = machineText !== shownText ? h("details", {}, h("summary", {}, "the machine's text"),
    h("pre", { cls: "text" }, machineText || "")) : null;
  const isEditing = S.editing && S.editing.field === key && !S.editing.candidate;
  const body = isEditing ? editBox(shownText) : h("pre", { cls: "text", "data-field": key }, shownText || "");
  return h("div", { cls: "field" },
    h("div", { cls: "label" }, label, machineText !== shownText ? badge("edited", "human") : null, extra,
      editable && !isEditing ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); startEdit(key); } }, "edit") : null),
    body, editedNote);
}

function taskCard(m, cur) {
  return h("div", { cls: "card" }, h("h3", {}, "Task"),
    textField("instruction", "instruction", m.instruction, cur.instruction, true),
    (m.input || cur.input) ? textField("input", "input", m.input, cur.input, true) : null,
    textField("output", "output", m.output, cur.output, true, m.is_classification ? badge("classification") : null));
}

function editBox(text) {
  const ta = h("textarea", { id: "edit-box", maxlength: "32000" });
  ta.value = text || "";
  return h("div", {}, ta,
    h("div", { cls: "edit-actions" },
      h("button", { cls: "btn primary", id: "save-edit", type: "button", onclick: saveEdit }, "Save", h("kbd", {}, "Ctrl+Enter")),
      h("button", { cls: "btn", type: "button", onclick: cancelEdit }, "Cancel", h("kbd", {}, "Esc"))));
}

function aspectsTable(j) {
  const rows = Object.entries(j.aspects || {}).map(([a, v]) =>
    h("tr", {}, h("td", {}, a), h("td", {}, fmt(v && v.score)), h("td", {}, (v && v.rationale) || "")));
  return rows.length ? h("table", { cls: "grid" }, h("tr", {}, h("th", {}, "aspect"), h("th", {}, "score"), h("th", {}, "rationale")), rows) : null;
}

function candidatesCard(cur) {
  const pair = (cur.judge && cur.judge.pair) || {};
  const cands = cur.candidates || [];
  const opts = (sel) => cands.map((c) => h("option", { value: c.id, selected: c.id === sel }, c.id));
  const pick = h("div", { cls: "pair-pick" }, "chosen", h("select", { id: "pick-chosen" }, opts(pair.chosen)),
    "rejected", h("select", { id: "pick-rejected" }, opts(pair.rejected || (cands[cands.length - 1] || {}).id)),
    h("button", { cls: "btn", id: "save-pair", type: "button", onclick: savePair }, "Save this pair"),
    h("span", { cls: "muted" }, "a person's pair replaces the judge's in the DPO export"));
  const cards = cands.map((c) => {
    const j = c.judge || {};
    const editing = S.editing && S.editing.candidate === c.id;
    const role = c.id === pair.chosen ? "chosen" : c.id === pair.rejected ? "rejected" : "";
    return h("div", { cls: "cand " + role, "data-cand": c.id },
      h("div", { cls: "head" }, h("span", { cls: "id" }, c.id), role ? badge(role, role === "chosen" ? "ok" : "bad") : null,
        c.human_edited ? badge("edited", "human") : null, h("span", { cls: "muted" }, [c.model, c.params && c.params.temperature !== undefined ? "T=" + c.params.temperature : null].filter(Boolean).join(" · ")),
        h("span", { cls: "grow" }), j.status ? badge(j.status === "unparsed" ? "unparsed" : "score " + fmt(j.score), j.status === "unparsed" ? "bad" : "score") : badge("not judged"),
        !editing ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); startEdit("candidate", c.id); } }, "edit") : null),
      editing ? editBox(c.output) : h("pre", { cls: "text" }, c.output || ""),
      j.error ? h("div", { cls: "muted" }, j.error) : null, aspectsTable(j));
  });
  return h("div", { cls: "card" }, h("h3", {}, "Candidates"), cands.length > 1 ? pick : null, h("div", { cls: "cands" }, cards));
}

function pairwiseCard(pw) {
  return h("div", { cls: "card" }, h("h3", {}, "Pairwise verdicts (both orders)"),
    h("table", { cls: "grid" }, h("tr", {}, ...["x", "y", "x shown first", "y shown first", "result", "position bias"].map((t) => h("th", {}, t))),
      pw.map((p) => h("tr", {}, h("td", { cls: "mono" }, p.x), h("td", { cls: "mono" }, p.y), h("td", {}, fmt(p.xy)),
        h("td", {}, fmt(p.yx)), h("td", {}, p.result === "x" ? p.x + " wins" : p.result === "y" ? p.y + " wins" : p.result),
        h("td", {}, p.position_bias ? badge("yes", "warn") : "no")))));
}

function pairRow(label, p) {
  if (!p) return null;
  return h("tr", {}, h("td", {}, label), h("td", { cls: "mono" }, fmt(p.chosen)), h("td", { cls: "mono" }, fmt(p.rejected)),
    h("td", {}, p.kept ? badge("kept", "ok") : badge(p.reason || "dropped", "bad")), h("td", {}, fmt(p.margin)), h("td", {}, fmt(p.basis)));
}

function pairCard(machine, shown) {
  const human = shown && shown.basis === "human" ? shown : null;
  return h("div", { cls: "card" }, h("h3", {}, "DPO pair"),
    h("table", { cls: "grid" }, h("tr", {}, ...["", "chosen", "rejected", "", "margin", "basis"].map((t) => h("th", {}, t))),
      pairRow("judge", human ? human.judge_pair : machine), pairRow("person", human)));
}

function filtersCard(m, nearest) {
  const rows = (m.filters || []).map((f) => h("tr", {}, h("td", {}, f.filter), h("td", {}, f.passed ? badge("pass", "ok") : badge("fail", "bad")),
    h("td", {}, fmt(f.score)), h("td", {}, fmt(f.reason)), h("td", { cls: "mono" }, f.detail ? JSON.stringify(f.detail) : "")));
  const near = Object.entries(nearest || {}).map(([id, t]) => h("div", { cls: "field" },
    h("div", { cls: "label" }, "nearest text ", h("span", { cls: "mono" }, id)),
    h("pre", { cls: "text" }, t ? t.instruction : "(not a record of this run: a seed task)")));
  return h("div", { cls: "card" }, h("h3", {}, "Filters"),
    rows.length ? h("table", { cls: "grid" }, h("tr", {}, ...["filter", "", "score", "reason", "detail"].map((t) => h("th", {}, t))), rows)
      : h("p", { cls: "muted" }, "no filter verdicts"), near);
}

function curationCard(c) {
  if (!c.removals.length && !c.cluster.length) return null;
  return h("div", { cls: "card" }, h("h3", {}, "Curation"),
    c.removals.map((r) => h("p", {}, badge(r.reason, "warn"), " in ", h("span", { cls: "mono" }, r.file),
      r.duplicate_of ? [" — duplicate of ", h("span", { cls: "mono" }, r.duplicate_of)] : null, r.similarity !== null ? ` (similarity ${fmt(r.similarity)})` : "")),
    c.cluster.length ? h("table", { cls: "grid" }, h("tr", {}, ...["duplicate cluster", "", "similarity", "instruction"].map((t) => h("th", {}, t))),
      c.cluster.map((x) => h("tr", {}, h("td", { cls: "mono" }, x.id), h("td", {}, x.kept ? badge("kept", "ok") : badge(x.reason, "warn")),
        h("td", {}, fmt(x.similarity)), h("td", {}, x.instruction || "")))) : null);
}

function lineageCard(lin) {
  const rows = Object.entries(lin).filter(([k]) => k !== "human_edits").map(([k, v]) => h("tr", {}, h("td", {}, k),
    h("td", { cls: typeof v === "object" ? "mono" : "" }, typeof v === "object" && v !== null ? JSON.stringify(v) : fmt(v))));
  return h("div", { cls: "card" }, h("h3", {}, "Lineage"), h("table", { cls: "kv" }, rows));
}

function historyCard(hist) {
  if (!hist.length) return null;
  return h("div", { cls: "card" }, h("h3", {}, "Verdicts (reviews.jsonl)"),
    h("table", { cls: "grid" }, hist.slice().reverse().map((r) => h("tr", {}, h("td", {}, r.time), h("td", {}, r.reviewer || ""),
      h("td", {}, r.action), h("td", {}, r.field ? r.field + (r.candidate ? " " + r.candidate : "") : r.chosen ? `${r.chosen} over ${r.rejected}` : r.reason || "")))));
}

// ------------------------------------------------------------------ verdicts

async function verdict(body, what) {
  body.record_id = S.rec.machine.id;
  const who = $("reviewer").value.trim();
  if (who) body.reviewer = who;
  try {
    await api("/api/review", body);
  } catch (e) { toast("not saved: " + e.message, true); return false; }
  toast(what + " " + body.record_id + " — saved");
  const id = body.record_id;
  await Promise.all([openRecord(id), loadList(true)]);
  return true;
}

function accept() { return verdict({ action: "accept" }, "accepted"); }

function startReject() {
  if ($("reject-reason")) { $("reject-reason").focus(); return; }
  const input = h("input", { id: "reject-reason", placeholder: "reason (Enter rejects, Esc cancels)", maxlength: "500", list: "reasons" });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); verdict({ action: "reject", reason: input.value.trim() }, "rejected"); }
    if (e.key === "Escape") { e.preventDefault(); input.remove(); }
  });
  const list = h("datalist", { id: "reasons" }, ["wrong answer", "unsafe", "not a real task", "duplicate", "bad language", "copied"].map((r) => h("option", { value: r })));
  $("reject-btn").after(input, list);
  input.focus();
}

function startEdit(field, candidate) {
  S.editing = { field, candidate };
  renderRecord();
  const box = $("edit-box");
  if (box) { box.focus(); box.scrollIntoView({ block: "center" }); }
}

function cancelEdit() { S.editing = null; renderRecord(); }

async function saveEdit() {
  const text = $("edit-box").value;
  const body = { action: "edit", field: S.editing.field, new: text };
  if (S.editing.candidate) body.candidate = S.editing.candidate;
  if (await verdict(body, "edited")) S.editing = null;
}

function savePair() {
  const ch = $("pick-chosen").value, rj = $("pick-rejected").value;
  if (ch === rj) { toast("chosen and rejected must differ", true); return; }
  verdict({ action: "choose", chosen: ch, rejected: rj }, "pair chosen for");
}

// ------------------------------------------------------------------ keys, facets, progress

function onKey(e) {
  const t = e.target, typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT");
  if (t && t.id === "edit-box") {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); saveEdit(); }
    else if (e.key === "Escape") { e.preventDefault(); cancelEdit(); }
    return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) { if (e.key === "Escape" && t.blur) t.blur(); return; }
  const k = e.key;
  if (k === "j") move(1);
  else if (k === "k") move(-1);
  else if (k === "n" && !$("next").disabled) { S.page++; loadList(false); }
  else if (k === "p" && S.page > 0) { S.page--; loadList(false); }
  else if (k === "/") { $("q").focus(); }
  else if (k === "?") { $("help").showModal(); }
  else if (!S.rec) return;
  else if (k === "a") accept();
  else if (k === "r") startReject();
  else if (k === "e") startEdit("output");
  else return;
  e.preventDefault();
}

function fillSelect(id, rows, keep) {
  const sel = $(id), first = sel.options[0];
  sel.replaceChildren(first, ...rows.map(([v, n]) => h("option", { value: v }, `${v} (${n.toLocaleString()})`)));
  sel.value = keep;
}

async function loadFacets() {
  const f = await api("/api/facets");
  const reasons = {};
  for (const [r, n] of [...f.reason, ...f.curation]) reasons[r] = (reasons[r] || 0) + n;
  fillSelect("reason", Object.entries(reasons).sort((a, b) => b[1] - a[1]), $("reason").value);
  fillSelect("teacher", f.teacher, $("teacher").value);
  const rv = f.reviewed || {};
  $("tally").textContent = `${f.records.toLocaleString()} records · ${((rv.accepted || 0) + (rv.rejected || 0)).toLocaleString()} reviewed`;
}

async function pollStatus() {
  let st;
  try { st = await api("/api/status"); } catch (e) { return; }
  $("run").textContent = st.run;
  if (!$("reviewer").value) $("reviewer").value = localStorage.getItem("datakit-reviewer") || st.reviewer || "";
  const ix = st.index, p = $("progress");
  if (ix.phase === "ready" || ix.phase === "failed") {
    p.hidden = ix.phase === "ready" && !st.stale;
    if (st.stale) p.textContent = "the run changed since it was indexed: restart datakit view to see it";
    if (ix.error) p.textContent = "index failed: " + ix.error;
    if (!S.staleTimer) S.staleTimer = setInterval(pollStale, 15000);
    if (S.wasIndexing) { S.wasIndexing = false; loadFacets(); loadList(true); }
    return;
  }
  S.wasIndexing = true;
  p.hidden = false;
  const pct = ix.total_bytes ? Math.floor((100 * ix.done_bytes) / ix.total_bytes) : 0;
  p.textContent = ix.phase === "search" ? "building the search index…" : `indexing ${pct}%…`;
  loadFacets();
  loadList(true);
  setTimeout(pollStatus, 1000);
}

async function pollStale() {
  try {
    const st = await api("/api/status");
    if (st.stale) { $("progress").hidden = false; $("progress").textContent = "the run changed since it was indexed: restart datakit view to see it"; }
  } catch (e) { /* the server is gone: the next action says so */ }
}

async function start() {
  const id = readHash();
  for (const f of FILTERS) {
    const el = $(f);
    el.addEventListener(f === "q" || f === "min" || f === "max" ? "input" : "change", () => {
      clearTimeout(S.typeTimer);
      S.typeTimer = setTimeout(refilter, f === "q" ? 250 : 0);
    });
  }
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); refilter(); });
  $("q").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); clearTimeout(S.typeTimer); refilter(); $("q").blur(); } });
  $("prev").addEventListener("click", () => { S.page--; loadList(false); });
  $("next").addEventListener("click", () => { S.page++; loadList(false); });
  $("help-btn").addEventListener("click", () => $("help").showModal());
  $("reviewer").addEventListener("change", () => localStorage.setItem("datakit-reviewer", $("reviewer").value.trim()));
  document.addEventListener("keydown", onKey);
  await pollStatus();
  await Promise.all([loadFacets(), loadList(false)]);
  if (id) {
    const i = S.items.findIndex((it) => it.id === id);
    if (i >= 0) await select(i); else await openRecord(id);
  }
  document.body.dataset.ready = "1";
}

start();
