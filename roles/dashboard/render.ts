// One dashboard frame as text, in the layout of the deployment guide ("Monitoring > Dashboard View").
// Pure: takes a DashboardSnapshot, returns a string. Fetching snapshots and redrawing live lives elsewhere.

import { formatDuration } from "../../lib/duration.ts";
import type { NodeRole, PeerStatus } from "../../lib/messages.ts";
import type { DashboardSnapshot, SnapshotNode } from "./snapshot.ts";

export interface RenderOptions {
  /** Colour the status dots with ANSI codes. Off by default so piped output stays plain text. */
  color?: boolean;
}

const BAR_CELLS = 9;
/** Running sub-tasks listed under one node row; the rest are summed up in one line. */
export const MAX_TASK_LINES = 5;

const HEADER = [
  "╔════════════════════════════════════════════════════════════╗",
  "║           PicoClaw Swarm Status Dashboard                  ║",
  "╚════════════════════════════════════════════════════════════╝",
];

const ROLE_ICON: Record<NodeRole, string> = {
  coordinator: "🎯",
  worker: "⚙️",
  specialist: "🔬",
  dashboard: "📊",
  gateway: "🚪",
};

const ROLE_LETTER: Record<NodeRole, string> = {
  coordinator: "C",
  worker: "W",
  specialist: "S",
  dashboard: "D",
  gateway: "G",
};

const GREEN = "\x1b[32m";
const YELLOW = "\x1b[33m";
const RED = "\x1b[31m";
const RESET = "\x1b[0m";

const STATUS_COLOR: Record<PeerStatus, string> = {
  online: GREEN,
  busy: YELLOW,
  draining: YELLOW,
  suspicious: YELLOW,
  offline: RED,
};

/** "[████░░░░░] 40% (2/5)". A node with no capacity gets an empty bar rather than NaN. */
export function loadBar(running: number, max: number): string {
  const ratio = max > 0 ? running / max : 0;
  const filled = Math.min(BAR_CELLS, Math.max(0, Math.round(BAR_CELLS * ratio)));
  const pct = Math.round(100 * ratio);
  return `[${"█".repeat(filled)}${"░".repeat(BAR_CELLS - filled)}] ${pct}% (${running}/${max})`;
}

/** Cursor home + clear screen, then the frame: redraws in place instead of scrolling. */
export function frameForTerminal(text: string): string {
  return `\x1b[H\x1b[2J${text}`;
}

function dot(status: PeerStatus, color: boolean): string {
  return color ? `${STATUS_COLOR[status]}●${RESET}` : "●";
}

// A dashboard node is an observer: it never takes tasks, so a 0/0 bar would only confuse.
function load(n: SnapshotNode): string {
  return n.role === "dashboard" || n.role === "gateway" ? "observer (runs no tasks)" : loadBar(n.running, n.max_concurrent);
}

function natsLine(nats: DashboardSnapshot["connections"]["nats"]): string {
  return nats.connected ? `✓ Yes ${nats.url}` : `✗ No  ${nats.url} (${nats.state})`;
}

function temporalLine(t: DashboardSnapshot["connections"]["temporal"]): string {
  if (!t.enabled) return "– off";
  if (t.connected) {
    const workers =
      t.polling === undefined ? "" : ` · ${t.polling} coordinator(s) polling · ${t.running ?? 0} running, ${t.completed ?? 0} completed`;
    return `✓ Yes ${t.address}${workers}`.trimEnd();
  }
  return `✗ No  ${t.address} (workflows disabled)`;
}

// generated_at is ISO-8601; show wall-clock time in UTC so every viewer sees the same value.
function clock(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "--:--:--" : d.toISOString().slice(11, 19);
}

// Columns as in the guide: id 22 wide, status 10 wide ("online    [").  padEnd never truncates, so a
// long id pushes its row right instead of being cut, and "suspicious" (10) still gets one space.
function nodeLine(n: SnapshotNode, color: boolean): string {
  const tokens = n.tokens.total > 0 ? `  ${formatTokens(n.tokens.total)} tokens` : "";
  return `  ${dot(n.status, color)} ${n.node.padEnd(22)} ${ROLE_LETTER[n.role]} ${n.status.padEnd(9)} ${load(n)}${tokens}`;
}

/** 950, 12.3k, 4.1M: token counts at a glance. */
export function formatTokens(n: number): string {
  if (n < 1_000) return String(n);
  if (n < 1_000_000) return `${(n / 1_000).toFixed(n < 10_000 ? 2 : 1).replace(/\.?0+$/, "")}k`;
  return `${(n / 1_000_000).toFixed(1).replace(/\.0$/, "")}M`;
}

/** "code 6.1k, security 4k": the biggest first, at most `max` of them. */
function tokenSplit(by: Record<string, number>, max = 6): string {
  const entries = Object.entries(by).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const shown = entries.slice(0, max).map(([k, v]) => `${k} ${formatTokens(v)}`);
  if (entries.length > max) shown.push(`… ${entries.length - max} more`);
  return shown.join(", ");
}

/** Swarm-wide tokens: the total, then by capability and by model when there are any. */
function tokenLines(t: DashboardSnapshot["tokens"]): string[] {
  const out = [`  Tokens:     ${formatTokens(t.total)} (${formatTokens(t.prompt)} prompt, ${formatTokens(t.completion)} completion)`];
  if (t.total > 0) {
    out.push(`              by capability: ${tokenSplit(t.by_capability)}`);
    out.push(`              by model: ${tokenSplit(t.by_model)}`);
  }
  return out;
}

// "      ↳ review (code) r-1a2b3c4d5e 12s": oldest first, elapsed on the snapshot's clock. An offline
// node's last report is not shown: its sub-tasks are no longer running there (they get redelivered).
function taskLines(n: SnapshotNode, generatedAt: string): string[] {
  const tools = n.tools?.length && n.status !== "offline" ? [`      tools: ${toolList(n.tools)}`] : [];
  if (n.status === "offline" || n.tasks.length === 0) return tools;
  const at = Date.parse(generatedAt);
  const tasks = [...n.tasks].sort((a, b) => a.started_at - b.started_at);
  const shown = tasks.slice(0, MAX_TASK_LINES).map((t) => {
    const elapsed = Number.isNaN(at) ? "-" : formatDuration(Math.max(0, at - t.started_at));
    return `      ↳ ${t.task} (${t.capability}) ${t.request} ${elapsed}${t.step ? ` · ${t.step}` : ""}`;
  });
  if (tasks.length > MAX_TASK_LINES) shown.push(`      … and ${tasks.length - MAX_TASK_LINES} more`);
  return [...tools, ...shown];
}

/** A node's tools in one line: MCP tools summed up per server beyond the first few. */
function toolList(tools: string[]): string {
  return tools.length <= 8 ? tools.join(", ") : `${tools.slice(0, 8).join(", ")} and ${tools.length - 8} more`;
}

export function renderDashboard(s: DashboardSnapshot, opts: RenderOptions = {}): string {
  const color = opts.color ?? false;
  const me = s.this_node;
  const { nodes, roles, capacity } = s.stats;
  const tasks = s.tasks;

  const lines = [
    ...HEADER,
    "",
    "【This Node】",
    `  ID:    ${me.node}`,
    `  Role:  ${ROLE_ICON[me.role]} ${me.role}`,
    `  Status: ${dot(me.status, color)} ${me.status}`,
    `  Load:  ${load(me)}`,
    `  Uptime: ${formatDuration(me.uptime_ms)}`,
    "",
    "【Connections】",
    `  NATS:     ${natsLine(s.connections.nats)}`,
    `  Temporal: ${temporalLine(s.connections.temporal)}`,
    "",
    "【Swarm Statistics】",
    `  Nodes:      ${nodes.total} total, ${nodes.online} online, ${nodes.offline} offline`,
    `  Roles:      ${roles.coordinator} coordinator(s), ${roles.worker} worker(s), ${roles.specialist} specialist(s)`,
    `  Capacity:   ${capacity.used}/${capacity.total} tasks used`,
    `  Tasks:      ${tasks.queued} queued, ${tasks.running} running, ${tasks.done} done, ${tasks.failed} failed`,
  ];
  if (s.bad_messages.total > 0) lines.push(`  Dropped malformed messages: ${s.bad_messages.total}`);
  lines.push(...tokenLines(s.tokens));

  lines.push("", "【Discovered Nodes】");
  if (s.nodes.length === 0) lines.push("  (no nodes yet — waiting for heartbeats)");
  for (const n of s.nodes) lines.push(nodeLine(n, color), ...taskLines(n, s.generated_at));

  if (s.approvals?.length) {
    lines.push("", "【Waiting for Approval】");
    const now = Date.parse(s.generated_at);
    for (const a of s.approvals) {
      lines.push(
        `  ${a.id}  ${a.tool} ${a.args} on ${a.node} (${a.request}/${a.task}), waiting ${formatDuration(now - a.asked_at)}: picoclaw approve ${a.id}`,
      );
    }
  }

  lines.push("", `  Swarm H-id: ${s.hid}   updated ${clock(s.generated_at)}`);
  return lines.join("\n");
}
