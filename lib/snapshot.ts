// The dashboard's data: one plain, JSON-serialisable picture of the swarm as one node sees it.
// `picoclaw --swarm.dashboard --json` prints exactly this (shape documented in README).

export type PeerStatus = "online" | "busy" | "draining" | "suspicious" | "offline";
export type SnapshotRole = "coordinator" | "worker" | "specialist" | "dashboard";

/** One sub-task running on a node now, as that node reported it in its last heartbeat. */
export interface SnapshotTask {
  request: string;
  task: string;
  capability: string;
  /** Epoch milliseconds (the running node's clock) when it started this attempt. */
  started_at: number;
}

export interface SnapshotNode {
  node: string;
  role: SnapshotRole;
  status: PeerStatus;
  capabilities: string[];
  running: number;
  max_concurrent: number;
  /** Milliseconds since the node started (from its own clock). */
  uptime_ms: number;
  /** Milliseconds since its last heartbeat reached us (0 for this node). */
  last_seen_ms_ago: number;
  version: string;
  /** Sub-tasks running on the node now (last heartbeat; kept as last reported for an offline node). */
  tasks: SnapshotTask[];
  /** Sub-tasks the node completed / failed since it started (reset when the node restarts). */
  done: number;
  failed: number;
  /** Malformed messages the node dropped since it started: total and the busiest subjects (at most 20). */
  bad_messages: { total: number; by_subject: Record<string, number> };
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
    temporal: { enabled: boolean; connected: boolean; address: string };
  };
  stats: {
    nodes: { total: number; online: number; busy: number; suspicious: number; offline: number };
    roles: { coordinator: number; worker: number; specialist: number };
    capacity: { used: number; total: number };
  };
  tasks: TaskCounts;
  /** Every node of the swarm this node knows, itself included when it is a swarm member, sorted by id. */
  nodes: SnapshotNode[];
  bad_messages: { total: number; by_subject: Record<string, number> };
}

/** Counts for the statistics block, derived from the node list (so they can never disagree with it). */
export function swarmStats(nodes: SnapshotNode[]): DashboardSnapshot["stats"] {
  const members = nodes.filter((n) => n.role !== "dashboard");
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
