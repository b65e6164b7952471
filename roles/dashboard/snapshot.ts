// The dashboard's data: one plain, JSON-serialisable picture of the swarm as one node sees it.
// `picoclaw --swarm.dashboard --json` prints exactly this (shape documented in docs/dashboard.md).

import type { NodeInfo, NodeRole, NodeTokens, PeerStatus, RunningTask } from "../../lib/messages.ts";
import type { SwarmNode } from "../../lib/node.ts";
import type { Queued } from "../../lib/queue-gauge.ts";
import { temporalSettings } from "../../lib/temporal.ts";
import type { PendingRow } from "./approvals.ts";

export interface SnapshotNode {
  node: string;
  role: NodeRole;
  status: PeerStatus;
  capabilities: string[];
  /** Tools the node offers its sub-tasks (built-in and `mcp_<server>_<tool>`). */
  tools?: string[];
  running: number;
  max_concurrent: number;
  /** Milliseconds since the node started (from its own clock). */
  uptime_ms: number;
  /** Milliseconds since its last heartbeat reached us (0 for this node). */
  last_seen_ms_ago: number;
  version: string;
  /** Sub-tasks running on the node now (last heartbeat; kept as last reported for an offline node). */
  tasks: RunningTask[];
  /** Sub-tasks the node completed / failed since it started (reset when the node restarts). */
  done: number;
  failed: number;
  /**
   * Malformed messages the node dropped since it started: total and the busiest subjects (at most 20);
   * `refused`: of those, the ones a check refused (unsigned control, forged record, ...), by kind.
   */
  bad_messages: { total: number; by_subject: Record<string, number>; refused: Record<string, number> };
  /** Tokens of the node's LLM calls since it started (by model and capability: at most 32 each). */
  tokens: TokenCounts;
}

/** Tokens: prompt + completion = total, and the total by model and by capability. */
export interface TokenCounts {
  prompt: number;
  completion: number;
  total: number;
  by_model: Record<string, number>;
  by_capability: Record<string, number>;
}

/** Swarm-wide sub-task counts. */
export interface TaskCounts {
  /** Sub-tasks waiting in the TASKS stream (sum of num_pending over the queue and direct consumers). */
  queued: number;
  /** Sub-tasks running on nodes that are not offline. */
  running: number;
  /** Sums over every node listed (their counters since they started). */
  done: number;
  failed: number;
}

export interface DashboardSnapshot {
  v: 1;
  generated_at: string;
  hid: string;
  this_node: SnapshotNode & { sid: string };
  connections: {
    nats: { connected: boolean; state: string; url: string; disconnects: number };
    temporal: {
      enabled: boolean;
      /** Some coordinator's workflow worker runs and its Temporal server answers. */
      connected: boolean;
      address: string;
      /** Coordinators whose workflow worker polls now. */
      polling?: number;
      /** Request workflows running and completed, as Temporal counts them. */
      running?: number;
      completed?: number;
    };
  };
  stats: {
    nodes: { total: number; online: number; busy: number; suspicious: number; offline: number };
    roles: { coordinator: number; worker: number; specialist: number };
    capacity: { used: number; total: number };
  };
  tasks: TaskCounts;
  /** Tokens of every listed node's LLM calls since it started, summed. */
  tokens: TokenCounts;
  /** Sub-tasks waiting per capability queue and priority (3 most urgent), busiest first; pinned ones as "(direct)". */
  queues: { capability: string; priority: number | null; queued: number }[];
  /** Every node of the swarm this node knows, itself included when it is a swarm member, sorted by id. */
  nodes: SnapshotNode[];
  /** Tool calls waiting for a person (tools.approval.required), oldest first; absent when the tasks bucket is not readable. */
  approvals?: PendingRow[];
  bad_messages: { total: number; by_subject: Record<string, number>; refused: Record<string, number> };
}

/** Counts for the statistics block, derived from the node list (so they can never disagree with it). */
export function swarmStats(nodes: SnapshotNode[]): DashboardSnapshot["stats"] {
  const members = nodes.filter((n) => n.role !== "dashboard" && n.role !== "gateway");
  const count = (pred: (n: SnapshotNode) => boolean) => members.filter(pred).length;
  const live = members.filter((n) => n.status !== "offline");
  return {
    nodes: {
      total: members.length,
      online: count((n) => n.status !== "offline"),
      busy: count((n) => n.status === "busy"),
      suspicious: count((n) => n.status === "suspicious"),
      offline: count((n) => n.status === "offline"),
    },
    roles: {
      coordinator: count((n) => n.role === "coordinator"),
      worker: count((n) => n.role === "worker"),
      specialist: count((n) => n.role === "specialist"),
    },
    capacity: {
      used: live.reduce((s, n) => s + n.running, 0),
      total: live.reduce((s, n) => s + n.max_concurrent, 0),
    },
  };
}

/** The swarm's task counts from the node list plus the queue depth (which only the stream knows). */
export function taskCounts(nodes: SnapshotNode[], queued: number): TaskCounts {
  const live = nodes.filter((n) => n.status !== "offline");
  return {
    queued,
    // Sub-tasks only: a coordinator's `running` counts the requests it coordinates.
    running: live.reduce((s, n) => s + (n.role === "coordinator" ? 0 : n.running), 0),
    done: nodes.reduce((s, n) => s + n.done, 0),
    failed: nodes.reduce((s, n) => s + n.failed, 0),
  };
}

/** One node's row: what it last said about itself, and how we see it (status, silence). */
export function snapshotNodeOf(info: NodeInfo, status: SnapshotNode["status"], lastSeenMsAgo: number, uptimeMs: number): SnapshotNode {
  return {
    node: info.node,
    role: info.role,
    status,
    capabilities: info.capabilities,
    tools: info.tools ?? [],
    running: info.running,
    max_concurrent: info.max_concurrent,
    uptime_ms: uptimeMs,
    last_seen_ms_ago: lastSeenMsAgo,
    version: info.version,
    tasks: (info.tasks ?? []).map(copyTask),
    done: info.done ?? 0,
    failed: info.failed ?? 0,
    bad_messages: { total: info.bad?.total ?? 0, by_subject: info.bad?.by_subject ?? {}, refused: info.bad?.refused ?? {} },
    tokens: tokenCounts([info.tokens]),
  };
}

/** Sums nodes' token counts (a node of an older version reports none). */
export function tokenCounts(all: (NodeTokens | TokenCounts | undefined)[]): TokenCounts {
  const t: TokenCounts = { prompt: 0, completion: 0, total: 0, by_model: {}, by_capability: {} };
  for (const n of all) {
    if (!n) continue;
    t.prompt += n.prompt;
    t.completion += n.completion;
    for (const [k, v] of Object.entries(n.by_model)) t.by_model[k] = (t.by_model[k] ?? 0) + v;
    for (const [k, v] of Object.entries(n.by_capability)) t.by_capability[k] = (t.by_capability[k] ?? 0) + v;
  }
  t.total = t.prompt + t.completion;
  return t;
}

export function buildSnapshot(node: SwarmNode, queued: Queued): DashboardSnapshot {
  const now = Date.now();
  const me = node.info();
  const self = snapshotNodeOf(me, me.status, 0, now - node.startedAt);
  const peers = [...node.membership.registry.values()].map((p) =>
    snapshotNodeOf(p.info, p.status, Math.max(0, now - p.lastSeen), Math.max(0, now - p.info.started_at)),
  );
  const nodes = (node.role === "dashboard" || node.role === "gateway" ? peers : [self, ...peers]).sort((a, b) =>
    a.node.localeCompare(b.node),
  );
  const live = [me, ...[...node.membership.registry.values()].filter((p) => p.status !== "offline").map((p) => p.info)];
  return {
    v: 1,
    generated_at: new Date(now).toISOString(),
    hid: node.identity.hid,
    this_node: { ...self, sid: node.identity.sid },
    connections: {
      nats: {
        connected: node.link.state() === "connected",
        state: node.link.state(),
        url: node.link.url(),
        disconnects: node.link.disconnects(),
      },
      temporal: temporalView(live, temporalSettings(node.config)?.address ?? ""),
    },
    stats: swarmStats(nodes),
    tasks: taskCounts(nodes, queued.total),
    tokens: tokenCounts(nodes.map((n) => n.tokens)),
    queues: queued.byQueue.map((q) => ({ ...q })),
    nodes,
    bad_messages: { total: node.bad.total(), by_subject: node.bad.counts(), refused: node.bad.refused() },
  };
}

// Only the four fields, in this order: the wire object may carry more after a protocol extension.
function copyTask(t: NonNullable<NodeInfo["tasks"]>[number]): SnapshotNode["tasks"][number] {
  return { request: t.request, task: t.task, capability: t.capability, started_at: t.started_at, ...(t.step ? { step: t.step } : {}) };
}

/**
 * Temporal as the swarm has it: connected only while some coordinator's workflow worker polls a server
 * that answers (the coordinators say so in their heartbeats), with the workflow counts they read.
 */
function temporalView(live: NodeInfo[], configured: string): DashboardSnapshot["connections"]["temporal"] {
  const reporting = live.filter((i) => i.temporal).map((i) => i.temporal!);
  const polling = reporting.filter((t) => t.polling);
  const address = polling[0]?.address ?? reporting[0]?.address ?? configured;
  if (polling.length === 0) return { enabled: reporting.length > 0 || configured !== "", connected: false, address };
  const most = (k: "running" | "completed") => Math.max(...polling.map((t) => t[k] ?? 0));
  return { enabled: true, connected: true, address, polling: polling.length, running: most("running"), completed: most("completed") };
}
