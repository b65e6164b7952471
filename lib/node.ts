// A running swarm node (or observer): NATS link, identity, membership, Temporal, and its dashboard view.
import { hostname } from "node:os";
import { createBadInputCounter, type BadInputCounter } from "./bad-input.ts";
import { serveControl } from "./control.ts";
import type { Config } from "./config.ts";
import { ensureEmbeddedNats, type EmbeddedNats } from "./embedded-nats.ts";
import { type Identity, resolveIdentity } from "./identity.ts";
import type { Logger } from "./log.ts";
import { startMembership, type Membership } from "./membership.ts";
import type { NodeInfo, NodeRole } from "./messages.ts";
import { type NatsLink, openNats } from "./nats-connection.ts";
import type { JetStreamManager, NatsConnection } from "nats";
import { ID_PATTERN } from "./ids.ts";
import { type DashboardSnapshot, type SnapshotNode, swarmStats, taskCounts } from "./snapshot.ts";
import { PRIORITIES, swarmNames, type SwarmNames } from "./subjects.ts";
import { connectTemporal, type TemporalLink } from "./temporal.ts";
import { type Coordinator, startCoordinator } from "./coordinator.ts";
import { type Executor, startExecutor } from "./executor.ts";
import { createLlm } from "./llm.ts";
import type { OnlineCapabilities } from "./planner.ts";
import type { Registry, RegistryEvent } from "./registry.ts";
import { ensureStreams } from "./streams.ts";
import { loadSigner } from "./signing.ts";
import { ConfigError } from "./errors.ts";
import { VERSION } from "./version.ts";

export interface SwarmNode {
  config: Config;
  identity: Identity;
  role: NodeRole;
  names: SwarmNames;
  link: NatsLink;
  membership: Membership;
  bad: BadInputCounter;
  temporal: () => TemporalLink;
  info(): NodeInfo;
  snapshot(): DashboardSnapshot;
  /**
   * Re-reads how many sub-tasks wait in the TASKS stream (snapshot().tasks.queued). Never throws;
   * resolves with the value now cached. snapshot() also refreshes it in the background when stale.
   */
  refreshQueue(): Promise<number>;
  /**
   * Graceful: stop taking sub-tasks, let running ones finish within `graceMs` (default
   * swarm.drain_grace; 0 hands them back at once), announce the leave, drain the connection, release
   * the embedded server. Idempotent.
   */
  stop(graceMs?: number): Promise<void>;
  /** Resolves when a stop was requested over NATS (`node.<id>.control`). */
  stopRequested: Promise<string>;
}

export interface StartOptions {
  /** Observers (the dashboard) join no swarm: no announcement, no heartbeat, not counted. */
  observer?: boolean;
  queryWindowMs?: number;
}

/** Applies `--swarm.nats.embedded`: start or join the local server and connect only to it. */
export async function prepareEmbedded(cfg: Config, log: Logger): Promise<EmbeddedNats | undefined> {
  if (!cfg.swarm.nats.embedded) return undefined;
  const embedded = await ensureEmbeddedNats(cfg, log);
  cfg.swarm.nats.urls = [embedded.url];
  return embedded;
}

export async function startNode(cfg: Config, log: Logger, opts: StartOptions = {}): Promise<SwarmNode> {
  const role: NodeRole = opts.observer ? "dashboard" : cfg.swarm.role;
  const embedded = await prepareEmbedded(cfg, log);
  const link = await openNats(cfg, `picoclaw-${role}`, log);
  const identity = await resolveIdentity(cfg, link.nc);
  const names = swarmNames(identity.hid);
  const bad = createBadInputCounter(log);
  const startedAt = Date.now();
  const nats = cfg.swarm.nats;
  if (identity.hidSource !== "configured") {
    log.debug("Using the deployment's default H-id", { hid: identity.hid, how: identity.hidSource });
  }

  let executor: Executor | undefined;
  let draining = false;
  let coordinator: Coordinator | undefined;
  const info = (): NodeInfo => {
    const tasks = executor?.running() ?? [];
    const max = opts.observer ? 0 : cfg.swarm.max_concurrent;
    return {
    v: 1,
    node: identity.node,
    sid: identity.sid,
    role,
    capabilities: opts.observer ? [] : cfg.swarm.capabilities,
    max_concurrent: max,
    // A coordinator's load is the requests it is coordinating (at most max_concurrent at once).
    running: coordinator ? coordinator.counts().active : tasks.length,
    tasks,
    done: executor?.counts().done ?? 0,
    failed: executor?.counts().failed ?? 0,
    status: draining ? "draining" : max > 0 && (coordinator ? coordinator.counts().active : tasks.length) >= max ? "busy" : "online",
    version: VERSION,
    started_at: startedAt,
    heartbeat_interval: nats.heartbeat_interval,
    host: hostname().slice(0, 255),
    };
  };

  const nodeEvents: ((e: RegistryEvent) => void)[] = [];
  const membership = startMembership({
    nc: link.nc,
    names,
    log,
    bad,
    self: info,
    heartbeatInterval: nats.heartbeat_interval,
    nodeTimeout: nats.node_timeout,
    observer: opts.observer,
    connected: () => link.state() === "connected",
    queryWindowMs: opts.queryWindowMs,
    onEvent: (e) => {
      for (const listener of nodeEvents) listener(e);
    },
  });

  if (!opts.observer) {
    const llm = createLlm(cfg.llm);
    if (llm.kind === "echo") {
      log.warn("LLM: echo provider (offline, no LLM configured); set PICOCLAW_LLM_BASE_URL / PICOCLAW_LLM_MODEL / PICOCLAW_LLM_API_KEY for a real one");
    } else log.info("LLM provider", { llm: llm.label });
    const signer = loadSigner(cfg);
    if (signer) {
      const list = role === "coordinator" ? "trusted_workers" : "trusted_coordinators";
      if (cfg.swarm.security[list].length === 0) {
        throw new ConfigError(`swarm.security.${list}`, "config", `the public keys of the ${role === "coordinator" ? "workers and specialists" : "coordinators"} to trust when signing is on`, []);
      }
      log.info("Signing on", { public_key: signer.publicKey });
    }
    const jsm = await ensureStreams(link.nc, names, cfg);
    const common = { nc: link.nc, jsm, names, cfg, node: identity.node, llm, log, bad, signer };
    if (role === "coordinator") {
      const coord = await startCoordinator({
        ...common,
        online: () => ({ capabilities: onlineCapabilities(membership.registry), nodes: onlineNodes(membership.registry) }),
        discovered: membership.discovered,
        onChange: () => membership.heartbeatNow(),
      });
      coordinator = coord;
      nodeEvents.push((e) => {
        if (e.kind === "offline") coord.nodeOffline(e.peer.info.node);
      });
    } else {
      const caps = role === "worker" ? [...new Set(["general", ...cfg.swarm.capabilities])] : cfg.swarm.capabilities;
      // Tell the swarm at once when a slot fills or frees, not only at the next heartbeat.
      executor = await startExecutor({ ...common, capabilities: caps, onChange: () => membership.heartbeatNow() });
    }
  }

  let temporal: TemporalLink = { enabled: false, connected: false, address: "", close: async () => {} };
  const temporalReady = connectTemporal(cfg, log).then((t) => (temporal = t));

  let requestStop: (why: string) => void = () => {};
  const stopRequested = new Promise<string>((r) => (requestStop = r));
  const control = opts.observer
    ? undefined
    : serveControl({ nc: link.nc, names, node: identity.node, log, bad, onStop: (a) => requestStop(a) });

  const queue = queueGauge(link.nc, names, log);
  // Only now, with consumers and the control subject in place, does the node tell the swarm it is here.
  membership.announce();

  let stopped: Promise<void> | undefined;
  const node: SwarmNode = {
    config: cfg,
    identity,
    role,
    names,
    link,
    membership,
    bad,
    temporal: () => temporal,
    info,
    snapshot: () => {
      queue.refreshIfStale();
      return buildSnapshot(node, startedAt, queue.value());
    },
    refreshQueue: () => queue.refresh(),
    stopRequested,
    stop: (graceMs = cfg.swarm.drain_grace) => {
      stopped ??= (async () => {
        control?.unsubscribe();
        draining = true;
        membership.heartbeatNow(); // peers stop routing to us while we drain
        await executor?.stop(graceMs);
        await coordinator?.stop();
        await membership.stop();
        await temporalReady;
        await temporal.close().catch(() => {});
        await link.nc.drain().catch(() => {});
        await embedded?.release();
      })();
      return stopped;
    },
  };
  return node;
}

function buildSnapshot(node: SwarmNode, startedAt: number, queued: number): DashboardSnapshot {
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

/** How often snapshot() re-reads the queue depth in the background. */
const QUEUE_REFRESH_MS = 1_000;
/** Bound on one JetStream API call, so a one-shot dashboard never hangs on a slow server. */
const QUEUE_API_TIMEOUT_MS = 2_000;

interface QueueGauge {
  value(): number;
  refresh(): Promise<number>;
  refreshIfStale(): void;
}

/**
 * Sub-tasks waiting in the TASKS stream: the sum of num_pending over its queue and direct consumers
 * (in a work-queue stream no message matches two consumers, so nothing is counted twice). Read through a
 * lazily created JetStreamManager, so an observer without streams of its own can do it too. A missing
 * stream means nothing was ever queued (0); any other failure keeps the last value. Never throws.
 */
function queueGauge(nc: NatsConnection, names: SwarmNames, log: Logger): QueueGauge {
  const isTaskConsumer = taskConsumerMatcher(names);
  let jsm: JetStreamManager | undefined;
  let queued = 0;
  let readAt = 0;
  let inFlight: Promise<number> | undefined;

  const read = async (): Promise<number> => {
    try {
      jsm ??= await nc.jetstreamManager({ timeout: QUEUE_API_TIMEOUT_MS });
      let sum = 0;
      for await (const ci of jsm.consumers.list(names.streams.tasks)) {
        if (isTaskConsumer(ci.name)) sum += ci.num_pending;
      }
      queued = sum;
    } catch (err) {
      if (isStreamNotFound(err)) queued = 0;
      else log.debug("Queue depth not read; keeping the last value", { stream: names.streams.tasks, error: (err as Error)?.message });
    }
    readAt = Date.now();
    return queued;
  };

  const refresh = () => {
    inFlight ??= read().finally(() => (inFlight = undefined));
    return inFlight;
  };

  return {
    value: () => queued,
    refresh,
    refreshIfStale() {
      if (!inFlight && Date.now() - readAt >= QUEUE_REFRESH_MS && !nc.isClosed()) void refresh();
    },
  };
}

function isStreamNotFound(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string } | undefined;
  return e?.api_error?.err_code === 10059 || /stream not found/i.test(String(e?.message ?? ""));
}

/**
 * Recognises the consumer names of names.consumers.queue / .direct without spelling them here: each
 * shape is learnt by building a name around a marker and keeping what comes before and after it.
 */
function taskConsumerMatcher(names: SwarmNames): (name: string) => boolean {
  const MARK = "MARK";
  const shapes = [names.consumers.direct(MARK), ...PRIORITIES.map((p) => names.consumers.queue(MARK, p))].map((built) => {
    const at = built.indexOf(MARK);
    return { head: built.slice(0, at), tail: built.slice(at + MARK.length) };
  });
  return (name) =>
    shapes.some(({ head, tail }) =>
      name.length > head.length + tail.length &&
      name.startsWith(head) &&
      name.endsWith(tail) &&
      ID_PATTERN.test(name.slice(head.length, name.length - tail.length)));
}

/** Resolves on the first SIGINT/SIGTERM; a second one exits at once. */
export function untilStopSignal(log: Logger): Promise<string> {
  return new Promise((resolve) => {
    let count = 0;
    const handler = (sig: NodeJS.Signals) => {
      count++;
      if (count > 1) {
        log.warn("Second signal: exiting without a clean leave", { signal: sig });
        process.exit(130);
      }
      log.info("Stopping", { signal: sig });
      resolve(sig);
    };
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  });
}

/** What the online nodes can do: workers also take `general`; coordinators run no sub-tasks. */
export function onlineNodes(registry: Registry): Set<string> {
  return new Set([...registry.values()].filter((p) => p.status !== "offline" && p.status !== "draining").map((p) => p.info.node));
}

export function onlineCapabilities(registry: Registry): OnlineCapabilities {
  const caps: OnlineCapabilities = new Map();
  for (const peer of registry.values()) {
    if (peer.status === "offline" || peer.status === "draining") continue;
    const { role, capabilities } = peer.info;
    if (role !== "worker" && role !== "specialist") continue;
    const all = role === "worker" ? new Set(["general", ...capabilities]) : new Set(capabilities);
    for (const c of all) caps.set(c, (caps.get(c) ?? 0) + 1);
  }
  return caps;
}
