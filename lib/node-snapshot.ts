// The dashboard's picture as one node sees it: itself, its registry, its connections.
import type { NodeInfo } from "./messages.ts";
import type { SwarmNode } from "./node.ts";
import { type DashboardSnapshot, type SnapshotNode, swarmStats, taskCounts } from "./snapshot.ts";

export function buildSnapshot(node: SwarmNode, startedAt: number, queued: number): DashboardSnapshot {
  const now = Date.now();
  const me = node.info();
  const self: SnapshotNode = {
    node: me.node,
    role: me.role,
    status: me.status,
    capabilities: me.capabilities,
    running: me.running,
    max_concurrent: me.max_concurrent,
    uptime_ms: now - startedAt,
    last_seen_ms_ago: 0,
    version: me.version,
    tasks: (me.tasks ?? []).map(copyTask),
    done: me.done ?? 0,
    bad_messages: me.bad ?? { total: 0, by_subject: {} },
    failed: me.failed ?? 0,
  };
  const peers: SnapshotNode[] = [...node.membership.registry.values()].map((p) => ({
    node: p.info.node,
    role: p.info.role,
    status: p.status,
    capabilities: p.info.capabilities,
    running: p.info.running,
    max_concurrent: p.info.max_concurrent,
    uptime_ms: Math.max(0, now - p.info.started_at),
    last_seen_ms_ago: now - p.lastSeen,
    version: p.info.version,
    tasks: (p.info.tasks ?? []).map(copyTask),
    done: p.info.done ?? 0,
    bad_messages: p.info.bad ?? { total: 0, by_subject: {} },
    failed: p.info.failed ?? 0,
  }));
  const nodes = (node.role === "dashboard" ? peers : [self, ...peers]).sort((a, b) => a.node.localeCompare(b.node));
  const t = node.temporal();
  return {
    v: 1,
    generated_at: new Date(now).toISOString(),
    hid: node.identity.hid,
    this_node: { ...self, sid: node.identity.sid },
    connections: {
      nats: { connected: node.link.state() === "connected", state: node.link.state(), url: node.link.url(), disconnects: node.link.disconnects() },
      temporal: { enabled: t.enabled, connected: t.connected, address: t.address },
    },
    stats: swarmStats(nodes),
    tasks: taskCounts(nodes, queued),
    nodes,
    bad_messages: { total: node.bad.total(), by_subject: node.bad.counts() },
  };
}

// Only the four fields, in this order: the wire object may carry more after a protocol extension.
function copyTask(t: NonNullable<NodeInfo["tasks"]>[number]): SnapshotNode["tasks"][number] {
  return { request: t.request, task: t.task, capability: t.capability, started_at: t.started_at };
}

