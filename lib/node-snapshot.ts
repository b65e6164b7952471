// The dashboard's picture as one node sees it: itself, its registry, its connections.
import type { NodeInfo } from "./messages.ts";
import type { SwarmNode } from "./node.ts";
import { type DashboardSnapshot, type SnapshotNode, swarmStats, taskCounts } from "./snapshot.ts";

/** One node's row: what it last said about itself, and how we see it (status, silence). */
export function snapshotNodeOf(info: NodeInfo, status: SnapshotNode["status"], lastSeenMsAgo: number, uptimeMs: number): SnapshotNode {
  return {
    node: info.node,
    role: info.role,
    status,
    capabilities: info.capabilities,
    running: info.running,
    max_concurrent: info.max_concurrent,
    uptime_ms: uptimeMs,
    last_seen_ms_ago: lastSeenMsAgo,
    version: info.version,
    tasks: (info.tasks ?? []).map(copyTask),
    done: info.done ?? 0,
    failed: info.failed ?? 0,
    bad_messages: info.bad ?? { total: 0, by_subject: {} },
  };
}

export function buildSnapshot(node: SwarmNode, startedAt: number, queued: number): DashboardSnapshot {
  const now = Date.now();
  const me = node.info();
  const self = snapshotNodeOf(me, me.status, 0, now - startedAt);
  const peers = [...node.membership.registry.values()].map((p) =>
    snapshotNodeOf(p.info, p.status, now - p.lastSeen, Math.max(0, now - p.info.started_at)),
  );
  const nodes = (node.role === "dashboard" ? peers : [self, ...peers]).sort((a, b) => a.node.localeCompare(b.node));
  const t = node.temporal();
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
