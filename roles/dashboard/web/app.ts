// The web dashboard's page script: one EventSource on /events; every message is the whole state
// (snapshot + live requests), rendered into the page. No framework: a few template functions.
import type { LiveRequest, LiveTask, RecentAnswer, WebState } from "../live.ts";
import type { DashboardSnapshot, SnapshotNode, TokenCounts } from "../snapshot.ts";

const $ = (id: string) => document.getElementById(id)!;
const esc = (v: unknown) =>
  String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

function fmtTokens(n: number): string {
  if (n < 1_000) return String(n);
  if (n < 1_000_000) return `${(n / 1_000).toFixed(n < 10_000 ? 2 : 1).replace(/\.?0+$/, "")}k`;
  return `${(n / 1_000_000).toFixed(1).replace(/\.0$/, "")}M`;
}

function fmtDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

const role = (r: string) => `<span class="role r-${esc(r)}">${esc(r)}</span>`;

function loadBar(n: SnapshotNode): string {
  if (n.max_concurrent === 0) return `<span class="sub">observer</span>`;
  const pct = Math.round((100 * n.running) / n.max_concurrent);
  return `<span class="bar"><i style="width:${Math.min(100, pct)}%"></i></span>${pct}% (${n.running}/${n.max_concurrent})`;
}

function kv(rows: [string, string][]): string {
  return `<div class="kv">${rows.map(([k, v]) => `<div class="k">${esc(k)}</div><div>${v}</div>`).join("")}</div>`;
}

function stat(n: string | number, label: string): string {
  return `<div class="stat"><div class="n">${esc(n)}</div><div class="l">${esc(label)}</div></div>`;
}

function renderCards(s: DashboardSnapshot): void {
  const me = s.this_node;
  $("this-node").innerHTML =
    `<h3>This node</h3>` +
    kv([
      ["ID", `<span class="mono">${esc(me.node)}</span>`],
      ["Role", role(me.role)],
      ["Status", `<span class="dot s-${esc(me.status)}"></span>${esc(me.status)}`],
      ["Load", loadBar(me)],
      ["Uptime", fmtDuration(me.uptime_ms)],
    ]);
  const nats = s.connections.nats;
  const t = s.connections.temporal;
  $("connections").innerHTML =
    `<h3>Connections</h3>` +
    kv([
      ["NATS", nats.connected ? `✓ ${esc(nats.url)}` : `✗ ${esc(nats.url)} (${esc(nats.state)})`],
      ["Temporal", !t.enabled ? "– off" : t.connected ? `✓ ${esc(t.address)}` : `✗ ${esc(t.address)} (workflows disabled)`],
      ["H-id", `<span class="mono">${esc(s.hid)}</span>`],
    ]);
  const st = s.stats;
  $("stats").innerHTML =
    `<h3>Swarm statistics</h3><div class="stats">` +
    stat(`${st.nodes.online}/${st.nodes.total}`, `nodes online (${st.nodes.offline} offline)`) +
    stat(`${st.roles.coordinator} · ${st.roles.worker} · ${st.roles.specialist}`, "coordinators · workers · specialists") +
    stat(`${st.capacity.used}/${st.capacity.total}`, "capacity used") +
    stat(`${s.tasks.queued} · ${s.tasks.running}`, "sub-tasks queued · running") +
    stat(`${s.tasks.done} · ${s.tasks.failed}`, "sub-tasks done · failed") +
    stat(fmtTokens(s.tokens.total), `tokens (${fmtTokens(s.tokens.prompt)} prompt, ${fmtTokens(s.tokens.completion)} completion)`) +
    `</div>`;
}

function renderNodes(s: DashboardSnapshot): void {
  const head = `<tr><th>Node</th><th>Role</th><th>Status</th><th>Load</th><th>Capabilities</th><th>Tokens</th><th>Done · failed</th></tr>`;
  const rows = s.nodes.map((n) => {
    const tasks =
      n.status === "offline"
        ? ""
        : n.tasks
            .map(
              (t) =>
                `<div class="running-task">↳ ${esc(t.task)} (${esc(t.capability)}) <span class="mono">${esc(t.request)}</span>` +
                `${t.step ? ` · <span class="step">${esc(t.step)}</span>` : ""}</div>`,
            )
            .join("");
    return (
      `<tr data-node="${esc(n.node)}" data-status="${esc(n.status)}" class="status-${esc(n.status)}">` +
      `<td class="mono">${esc(n.node)}${tasks}</td><td>${role(n.role)}</td>` +
      `<td><span class="dot s-${esc(n.status)}"></span><span class="status">${esc(n.status)}</span></td>` +
      `<td>${loadBar(n)}</td><td>${n.capabilities.map((c) => `<span class="chip">${esc(c)}</span>`).join("")}` +
      `${n.tools?.length ? `<div class="tools">tools: ${esc(n.tools.join(", "))}</div>` : ""}</td>` +
      `<td>${fmtTokens(n.tokens.total)}</td><td>${n.done} · ${n.failed}</td></tr>`
    );
  });
  $("nodes").innerHTML = head + (rows.join("") || `<tr><td colspan="7" class="sub">no nodes yet — waiting for heartbeats</td></tr>`);
}

function renderQueues(s: DashboardSnapshot): void {
  const caps = [...new Set(s.queues.map((q) => q.capability))].sort();
  const cell = (cap: string, prio: number | null) => s.queues.find((q) => q.capability === cap && q.priority === prio)?.queued ?? 0;
  const head = `<tr><th>Capability</th><th>urgent (3)</th><th>2</th><th>normal (1)</th><th>low (0)</th></tr>`;
  const rows = caps.map((c) =>
    c === "(direct)"
      ? `<tr><td>pinned to a node</td><td colspan="4">${cell(c, null)}</td></tr>`
      : `<tr data-queue="${esc(c)}"><td>${esc(c)}</td>${[3, 2, 1, 0].map((p) => `<td>${cell(c, p)}</td>`).join("")}</tr>`,
  );
  $("queues").innerHTML = head + (rows.join("") || `<tr><td colspan="5" class="sub">no queues yet</td></tr>`);
}

function split(by: Record<string, number>): string {
  const rows = Object.entries(by).sort((a, b) => b[1] - a[1]);
  return rows.length
    ? rows.map(([k, v]) => `<span class="chip">${esc(k)} ${fmtTokens(v)}</span>`).join("")
    : `<span class="sub">none yet</span>`;
}

function renderTokens(t: TokenCounts, nodes: SnapshotNode[]): void {
  const byNode = Object.fromEntries(nodes.filter((n) => n.tokens.total > 0).map((n) => [n.node, n.tokens.total]));
  $("tokens").innerHTML = `<div class="card">${kv([
    ["Total", `${fmtTokens(t.total)} <span class="sub">(${fmtTokens(t.prompt)} prompt, ${fmtTokens(t.completion)} completion)</span>`],
    ["By capability", split(t.by_capability)],
    ["By model", split(t.by_model)],
    ["By node", split(byNode)],
  ])}</div>`;
}

/** Columns of the DAG: a task sits one level right of its deepest dependency. */
function levels(tasks: LiveTask[]): LiveTask[][] {
  const depth = new Map<string, number>();
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const of = (t: LiveTask, seen: Set<string>): number => {
    if (depth.has(t.id)) return depth.get(t.id)!;
    if (seen.has(t.id)) return 0;
    seen.add(t.id);
    const d = Math.max(-1, ...t.depends_on.map((id) => (byId.has(id) ? of(byId.get(id)!, seen) : -1))) + 1;
    depth.set(t.id, d);
    return d;
  };
  const out: LiveTask[][] = [];
  for (const t of tasks) {
    const d = of(t, new Set());
    out[d] = [...(out[d] ?? []), t];
  }
  return out.filter(Boolean);
}

function taskBox(t: LiveTask, now: number): string {
  const took = t.started_at ? fmtDuration((t.ended_at ?? now) - t.started_at) : "";
  return (
    `<div class="task t-${esc(t.state)}" data-task="${esc(t.id)}" data-state="${esc(t.state)}">` +
    `<div class="title">${esc(t.title)}</div>` +
    `<div class="meta">${esc(t.capability)} · <span class="badge b-${esc(t.state)}">${esc(t.state)}</span></div>` +
    `<div class="meta">${t.node ? `on <span class="mono">${esc(t.node)}</span>` : "not started"}${took ? ` · ${took}` : ""}${t.attempt && t.attempt > 1 ? ` · attempt ${t.attempt}` : ""}</div>` +
    `<div class="meta">${fmtTokens(t.tokens)} tokens${t.depends_on.length ? ` · <span class="arrow">after ${t.depends_on.map(esc).join(", ")}</span>` : ""}</div>` +
    (t.error ? `<div class="meta" style="color:var(--red)">${esc(t.error.slice(0, 200))}</div>` : "") +
    `</div>`
  );
}

function renderRequests(list: LiveRequest[], now: number): void {
  $("requests").innerHTML =
    list
      .map((r) => {
        const state = r.state === "answered" ? (r.status ?? "completed") : r.state;
        const dag = levels(r.tasks)
          .map((col) => `<div class="level">${col.map((t) => taskBox(t, now)).join("")}</div>`)
          .join(`<div class="level arrow">→</div>`);
        return (
          `<div class="req" data-request="${esc(r.request)}" data-state="${esc(state)}">` +
          `<div class="req-head"><span class="req-id">${esc(r.request)}</span><span class="badge b-${esc(state)}">${esc(state)}</span>` +
          `<span class="sub">${r.tasks.length} sub-task(s)${r.planner ? `, ${esc(r.planner)} plan` : ""}${r.coordinator ? ` · coordinator <span class="mono">${esc(r.coordinator)}</span>` : ""}</span>` +
          `<span class="sub">${fmtTokens(r.tokens)} tokens · ${fmtDuration(r.duration_ms ?? now - r.first_seen)}</span>` +
          (r.error ? `<span class="sub" style="color:var(--red)">${esc(r.error.slice(0, 200))}</span>` : "") +
          `</div><div class="dag">${dag}</div></div>`
        );
      })
      .join("") ||
    `<div class="empty">no requests yet — submit one with <span class="mono">picoclaw submit "…"</span> or through the gateway</div>`;
}

const openAnswers = new Set<string>();
function renderAnswers(list: RecentAnswer[]): void {
  $("answers").innerHTML =
    list
      .map((a) => {
        const rows = a.usage_by
          .map((u) => `${esc(u.node)} · ${esc(u.capability)} · ${esc(u.model)}: ${fmtTokens(u.total_tokens)}`)
          .join("; ");
        return (
          `<details class="answer" data-answer="${esc(a.request)}"${openAnswers.has(a.request) ? " open" : ""}>` +
          `<summary><span class="req-id">${esc(a.request)}</span><span class="badge b-${esc(a.status)}">${esc(a.status)}</span>` +
          `<span class="sub">${a.duration_ms !== undefined ? fmtDuration(a.duration_ms) : ""} · ${fmtTokens(a.usage?.total_tokens ?? 0)} tokens · ${new Date(a.at).toLocaleTimeString()}</span></summary>` +
          `<pre>${esc(a.answer || a.error)}${a.truncated ? "\n…" : ""}</pre>` +
          (rows ? `<div class="usage">tokens by node, capability and model: ${rows}</div>` : "") +
          `</details>`
        );
      })
      .join("") || `<div class="empty">no answers yet</div>`;
}

/**
 * One row per waiting call, added when it comes and removed when it goes, never redrawn: a note being
 * typed (and its focus) must survive the page's updates. Everything is redrawn only when the page
 * changes between deciding and read-only.
 */
let approvalsMode: boolean | undefined;
function approvalRow(c: WebState["approvals"]["calls"][number], decide: boolean): string {
  return (
    `<div class="approval" data-approval="${esc(c.id)}">` +
    `<div><span class="mono">${esc(c.id)}</span> <b>${esc(c.tool)}</b> ${esc(c.args)} on <span class="mono">${esc(c.node)}</span>` +
    ` <span class="sub">${esc(c.request)}/${esc(c.task)} · waiting <span class="waited" data-since="${c.asked_at}"></span></span></div>` +
    `<div class="mono sub">arguments: ${esc(c.arguments)}</div>` +
    (c.reason ? `<div class="sub">the model said: ${esc(c.reason.slice(0, 300))}</div>` : "") +
    (decide
      ? `<div><input class="note" placeholder="note, or why it is denied" maxlength="2000">` +
        `<button data-decide="approved">Approve</button><button data-decide="denied">Deny</button></div>`
      : "") +
    `</div>`
  );
}
function renderApprovals(a: WebState["approvals"], now: number): void {
  $("approvals-section").hidden = a.calls.length === 0 && !$("approval-result").textContent;
  $("approval-controls").hidden = !a.decide;
  $("approval-read-only").textContent = a.decide ? "" : `Read-only: ${a.read_only ?? ""}`;
  const box = $("approvals");
  if (approvalsMode !== a.decide) {
    approvalsMode = a.decide;
    box.innerHTML = "";
  }
  const waiting = new Set(a.calls.map((c) => c.id));
  for (const row of [...box.querySelectorAll<HTMLElement>("[data-approval]")]) if (!waiting.has(row.dataset.approval ?? "")) row.remove();
  const shown = new Set([...box.querySelectorAll<HTMLElement>("[data-approval]")].map((r) => r.dataset.approval));
  for (const c of a.calls) if (!shown.has(c.id)) box.insertAdjacentHTML("beforeend", approvalRow(c, a.decide));
  for (const w of document.querySelectorAll<HTMLElement>(".waited")) w.textContent = fmtDuration(now - Number(w.dataset.since));
}

$("approvals").addEventListener("click", async (e) => {
  const button = (e.target as HTMLElement).closest<HTMLButtonElement>("button[data-decide]");
  const row = button?.closest<HTMLElement>("[data-approval]");
  if (!button || !row) return;
  const result = $("approval-result");
  const token = ($("approval-token") as HTMLInputElement).value;
  if (!token) {
    result.textContent = "Enter the approval token first.";
    return;
  }
  button.disabled = true;
  const res = await fetch("api/approvals/decide", {
    method: "POST",
    headers: { "content-type": "application/json", "x-picoclaw-approval-token": token },
    body: JSON.stringify({
      id: row.dataset.approval,
      outcome: button.dataset.decide,
      note: row.querySelector<HTMLInputElement>(".note")?.value || undefined,
      by: ($("approval-by") as HTMLInputElement).value || undefined,
    }),
  }).catch((err: Error) => ({ ok: false, json: async () => ({ error: err.message }) }));
  const body = (await res.json().catch(() => ({}))) as { error?: string; decision?: { id: string; outcome: string; by: string } };
  result.textContent = body.decision
    ? `${body.decision.id}: ${body.decision.outcome} by ${body.decision.by}`
    : `Not decided: ${body.error ?? "no answer"}`;
  button.disabled = false;
});

function render(state: WebState): void {
  const s = state.snapshot;
  const now = Date.parse(s.generated_at);
  renderCards(s);
  renderNodes(s);
  renderQueues(s);
  renderTokens(s.tokens, s.nodes);
  renderApprovals(state.approvals, now);
  renderRequests(state.live.requests, now);
  renderAnswers(state.live.answers);
  $("footer").textContent = `Swarm H-id ${s.hid} · updated ${new Date(now).toLocaleTimeString()}`;
}

$("answers").addEventListener(
  "toggle",
  (e) => {
    const d = e.target as HTMLDetailsElement;
    const id = d.dataset.answer;
    if (id) d.open ? openAnswers.add(id) : openAnswers.delete(id);
  },
  true,
);

const events = new EventSource("events");
const conn = $("conn");
events.onmessage = (m) => {
  conn.className = "conn live";
  conn.textContent = "live";
  render(JSON.parse(m.data) as WebState);
};
events.onerror = () => {
  conn.className = "conn down";
  conn.textContent = "reconnecting…";
};
