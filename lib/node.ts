// What every process on the swarm shares: the NATS link, who it is, membership, control, Temporal.
// A role starts a node, sets up its own work, then calls ready(): only then does the node announce
// itself, so a peer that sees "Node joined swarm" can use it at once. Observers (dashboards) join
// no swarm: no announcement, no heartbeat, no control subject.
import { hostname } from "node:os";
import type { JetStreamManager } from "nats";
import { type BadInputCounter, createBadInputCounter } from "./bad-input.ts";
import type { Config } from "./config.ts";
import { serveControl } from "./control.ts";
import { type EmbeddedNats, ensureEmbeddedNats } from "./embedded-nats.ts";
import { PicoclawError } from "./errors.ts";
import { type Handler, type HttpEndpoint, serveNodeHttp } from "./http.ts";
import { type Identity, resolveIdentity } from "./identity.ts";
import type { Logger } from "./log.ts";
import { type Membership, startMembership } from "./membership.ts";
import {
  MAX_BAD_SUBJECTS_REPORTED,
  MAX_TOKEN_KEYS_REPORTED,
  MEMBER_ROLES,
  type NodeInfo,
  type NodeRole,
  type NodeTokens,
  type ObserverRole,
  PEER_STATUSES,
  type Role,
  type RunningTask,
  type TemporalStatus,
} from "./messages.ts";
import { createMetrics, LLM_TOKENS_METRIC, type Metrics, type Sample } from "./metrics.ts";
import { describeNatsError, isStreamNotFound, isTransientNatsError, type NatsLink, openNats, requireJetStream } from "./nats-connection.ts";
import { type QueueGauge, queueGauge } from "./queue-gauge.ts";
import type { RegistryEvent } from "./registry.ts";
import { NATS_BACKOFF, withRetry } from "./retry.ts";
import { untilStopSignal } from "./signals.ts";
import { loadKey } from "./signing.ts";
import { ensureStreams } from "./streams.ts";
import { type SwarmNames, swarmNames } from "./subjects.ts";
import { VERSION } from "./version.ts";

/** What a role reports about its work in every heartbeat, and how it stops. */
export interface RoleWork {
  /** Work in progress: sub-tasks for workers, requests for coordinators. */
  load(): { running: number; tasks?: RunningTask[]; done?: number; failed?: number; temporal?: TemporalStatus; tools?: string[] };
  /** Stop taking work; let running work finish within `graceMs` (0: hand it back at once). */
  stop(graceMs: number): Promise<void>;
}

export interface SwarmNode {
  config: Config;
  log: Logger;
  identity: Identity;
  role: NodeRole;
  names: SwarmNames;
  link: NatsLink;
  membership: Membership;
  bad: BadInputCounter;
  startedAt: number;
  /** This process's Prometheus metrics; roles add what they measure. */
  metrics: Metrics;
  /** Sub-tasks waiting in the TASKS stream, per capability (read in the background). */
  queue: QueueGauge;
  info(): NodeInfo;
  /** Peer events (joined, offline, left, ...), after the node logged them. */
  onPeerEvent(listener: (e: RegistryEvent) => void): void;
  /** The role's work is set up: announce the node and heartbeat its load. Members only. */
  ready(work: RoleWork): void;
  /**
   * Serves /healthz, /readyz, /metrics and the role's `routes` on swarm.http.listen; nothing when that is
   * unset. Stopped with the node.
   */
  serveHttp(routes?: Record<string, Handler>): HttpEndpoint | undefined;
  /** A start-up step that talks to JetStream, riding out transient NATS errors (see `duringStartUp`). */
  startUp<T>(what: string, step: () => Promise<T>): Promise<T>;
  /** Resolves when a stop was requested over NATS (`node.<id>.control`). */
  stopRequested: Promise<string>;
  /**
   * Graceful: stop taking work, let running work finish within `graceMs` (default swarm.drain_grace;
   * 0 hands it back at once), announce the leave, drain the connection, release the embedded server.
   * Idempotent.
   */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  /**
   * Observers join no swarm: no announcement, no heartbeat, not counted. `true` is the dashboard;
   * the gateway names itself.
   */
  observer?: boolean | ObserverRole;
  queryWindowMs?: number;
}

/** Members also get the swarm's streams, created when missing. */
export interface MemberNode extends SwarmNode {
  jsm: JetStreamManager;
}

/** Applies `--swarm.nats.embedded`: start or join the local server and connect only to it. */
async function prepareEmbedded(cfg: Config, log: Logger): Promise<EmbeddedNats | undefined> {
  if (!cfg.swarm.nats.embedded) return undefined;
  const embedded = await ensureEmbeddedNats(cfg, log);
  cfg.swarm.nats.urls = [embedded.url];
  return embedded;
}

/**
 * A cluster that is forming, or has a peer restarting, refuses to place a replicated stream for a moment
 * ("no suitable peers for placement, peer offline"). Were it for good (more replicas than servers) the
 * same error still stops start-up, once connect_timeout has passed.
 */
const PLACEMENT_NOT_YET = /no suitable peers for placement|peer offline/i;

function placementNotYet(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) if (PLACEMENT_NOT_YET.test(e.message)) return true;
  return false;
}

/**
 * Runs a start-up step that talks to JetStream (the deployment's H-id, the swarm's streams, buckets and
 * consumers), trying it again on a transient NATS error, or a placement the cluster cannot make yet, for
 * up to swarm.nats.connect_timeout. On a fresh cluster JetStream answers before it has elected leaders,
 * and nodes starting at the same moment race to create the same replicated bucket: the loser sees a
 * time-out or 503 for a few seconds, which is no reason to exit. On a 2.15 cluster the loser has also
 * been told "stream not found" (404) for the bucket the winner was creating. Other errors (permissions,
 * a setting the server refuses) end start-up at once, naming the step.
 */
export async function duringStartUp<T>(cfg: Config, log: Logger, what: string, step: () => Promise<T>): Promise<T> {
  let warned = false;
  return withRetry(step, {
    backoff: NATS_BACKOFF,
    untilMs: cfg.swarm.nats.connect_timeout,
    retryable: (err) => isTransientNatsError(err) || placementNotYet(err) || isStreamNotFound(err),
    onRetry: (err, attempt, delayMs) => {
      const fields = { step: what, error: describeNatsError(err), attempt, retry_in_ms: delayMs };
      if (warned) log.debug("JetStream not ready yet; trying again", fields);
      else log.warn("JetStream not ready yet; trying again", fields);
      warned = true;
    },
  }).catch((err) => {
    // A bare NATS error says what the server refused, not what we were doing: name the step.
    if ((err as Error)?.name !== "NatsError") throw err;
    const code = (err as { code?: string }).code;
    throw new PicoclawError("E_NATS", `cannot ${what}: ${(err as Error).message}${code ? ` (${code})` : ""}`, { cause: err });
  });
}

export async function startMember(cfg: Config, log: Logger): Promise<MemberNode> {
  const node = await startNode(cfg, log);
  const role = cfg.swarm.role === "coordinator" ? "owner" : "member";
  const jsm = await node.startUp("create the swarm's streams", () => ensureStreams(node.link.nc, node.names, cfg, log, role));
  return Object.assign(node, { jsm });
}

export async function startNode(cfg: Config, log: Logger, opts: StartOptions = {}): Promise<SwarmNode> {
  const role: NodeRole = opts.observer ? (opts.observer === true ? "dashboard" : opts.observer) : cfg.swarm.role;
  const embedded = await prepareEmbedded(cfg, log);
  const link = await openNats(cfg, `picoclaw-${role}`, log);
  await requireJetStream(link, cfg.swarm.nats.connect_timeout, embedded ? cfg.swarm.nats.embedded_port : undefined);
  const identity = await duringStartUp(cfg, log, "adopt the deployment's H-id", () => resolveIdentity(cfg, link.nc));
  const names = swarmNames(identity.hid);
  const bad = createBadInputCounter(log);
  const startedAt = Date.now();
  const nats = cfg.swarm.nats;
  if (identity.hidSource !== "configured") {
    log.debug("Using the deployment's default H-id", { hid: identity.hid, how: identity.hidSource });
  }

  let work: RoleWork | undefined;
  let draining = false;
  const metrics = createMetrics();
  const info = (): NodeInfo => {
    const load = work?.load() ?? { running: 0 };
    const max = opts.observer ? 0 : cfg.swarm.max_concurrent;
    return {
      v: 1,
      node: identity.node,
      sid: identity.sid,
      role,
      capabilities: opts.observer ? [] : cfg.swarm.capabilities,
      tools: load.tools,
      max_concurrent: max,
      running: load.running,
      tasks: load.tasks ?? [],
      done: load.done ?? 0,
      failed: load.failed ?? 0,
      temporal: load.temporal,
      bad: { total: bad.total(), by_subject: busiest(bad.counts(), MAX_BAD_SUBJECTS_REPORTED), refused: bad.refused() },
      tokens: opts.observer ? undefined : nodeTokens(metrics.read(LLM_TOKENS_METRIC)),
      status: draining ? "draining" : max > 0 && load.running >= max ? "busy" : "online",
      version: VERSION,
      started_at: startedAt,
      heartbeat_interval: nats.heartbeat_interval,
      host: hostname().slice(0, 255),
    };
  };

  const peerListeners: ((e: RegistryEvent) => void)[] = [];
  const membership = startMembership({
    nc: link.nc,
    names,
    log,
    bad,
    self: info,
    heartbeatInterval: nats.heartbeat_interval,
    nodeTimeout: nats.node_timeout,
    observer: !!opts.observer,
    connected: () => link.state() === "connected",
    queryWindowMs: opts.queryWindowMs,
    maxPeers: cfg.swarm.max_nodes,
    onEvent: (e) => {
      for (const listener of peerListeners) listener(e);
    },
  });

  let requestStop: (why: string) => void = () => {};
  const stopRequested = new Promise<string>((r) => {
    requestStop = r;
  });
  const sec = cfg.swarm.security;
  const control = opts.observer
    ? undefined
    : serveControl({
        nc: link.nc,
        names,
        node: identity.node,
        log,
        bad,
        security: sec.signing
          ? {
              trustedAdmins: new Set(sec.trusted_admins),
              maxSkewMs: sec.max_skew,
              signer: loadKey(cfg),
            }
          : undefined,
        onStop: (a) => requestStop(a),
      });

  const queue = queueGauge(link.nc, names, log);
  let announced = false;
  let discovered = false;
  void membership.discovered.then(() => {
    discovered = true;
  });
  nodeMetrics(metrics, { identity, role, link, bad, membership, queue, info, observer: !!opts.observer });
  let http: HttpEndpoint | undefined;
  const jetStream = jetStreamProbe(link);

  let stopped: Promise<void> | undefined;
  return {
    config: cfg,
    log,
    identity,
    role,
    names,
    link,
    membership,
    bad,
    startedAt,
    metrics,
    queue,
    info,
    onPeerEvent: (listener) => peerListeners.push(listener),
    startUp: (what, step) => duringStartUp(cfg, log, what, step),
    ready(w) {
      work = w;
      membership.announce();
      announced = true;
    },
    serveHttp(routes) {
      const listen = cfg.swarm.http.listen;
      if (!listen || http) return http;
      http = serveNodeHttp(
        listen,
        "configuration",
        {
          health: () => ({ ok: link.state() === "connected", detail: { nats: link.state(), role, node: identity.node } }),
          async ready() {
            // Members are ready once they announced themselves; observers once they have looked around.
            const joined = opts.observer ? discovered : announced;
            const js = await jetStream();
            return { ok: joined && js === "ok", detail: { joined, jetstream: js, nats: link.state() } };
          },
          metrics: () => {
            queue.refreshIfStale();
            return metrics.render();
          },
          routes,
        },
        log,
      );
      return http;
    },
    stopRequested,
    stop: (graceMs = cfg.swarm.drain_grace) => {
      stopped ??= (async () => {
        control?.unsubscribe();
        await http?.stop();
        draining = true;
        membership.heartbeatNow(); // peers stop routing to us while we drain
        await work?.stop(graceMs);
        await membership.stop();
        await link.nc.drain().catch(() => {});
        await embedded?.release();
      })();
      return stopped;
    },
  };
}

/**
 * A member's whole life: listen for signals (so one during start-up still ends in a clean leave),
 * start, set up the role's work, then run until SIGINT/SIGTERM or a stop over NATS and stop cleanly.
 * `shutdown` over NATS hands running work back at once; a signal or `drain` gives it drain_grace.
 * `then` (the dashboard of a member) takes over after set-up when given.
 */
export async function serveMember(
  cfg: Config,
  log: Logger,
  setUp: (node: MemberNode) => Promise<void>,
  then?: (node: MemberNode, signalled: Promise<string>) => Promise<number>,
): Promise<number> {
  const signalled = untilStopSignal(log);
  // A signal while start-up waits (for NATS, or for a coordinator to create the streams) ends it.
  const stopped = signalled.then(() => undefined);
  const node = await Promise.race([startMember(cfg, log), stopped]);
  if (!node) return 0;
  node.serveHttp(); // /healthz answers from here on; /readyz once the role has set up and joined
  if ((await Promise.race([setUp(node).then(() => true), stopped])) === undefined) {
    await node.stop(0);
    return 0;
  }
  if (then) return then(node, signalled);
  const why = await Promise.race([signalled, node.stopRequested]);
  await node.stop(why === "shutdown" ? 0 : cfg.swarm.drain_grace);
  return 0;
}

/** JetStream answers (checked at most every few seconds): what /readyz asks besides having joined. */
function jetStreamProbe(link: NatsLink): () => Promise<string> {
  let last: { at: number; value: string } | undefined;
  return async () => {
    if (last && Date.now() - last.at < 5_000) return last.value;
    const value = await link.nc
      .jetstreamManager({ timeout: 2_000 })
      .then((jsm) => jsm.getAccountInfo())
      .then(
        () => "ok",
        (err: Error) => `unusable: ${err.message}`,
      );
    last = { at: Date.now(), value };
    return value;
  };
}

/** What every node measures: who it is, the swarm as it sees it, its NATS link and the input it dropped. */
function nodeMetrics(
  m: Metrics,
  n: {
    identity: Identity;
    role: NodeRole;
    link: NatsLink;
    bad: BadInputCounter;
    membership: Membership;
    queue: QueueGauge;
    info: () => NodeInfo;
    observer: boolean;
  },
): void {
  m.gauge("picoclaw_node_info", "This node: its id, role, swarm and version (always 1).", () => [
    { labels: { node: n.identity.node, role: n.role, hid: n.identity.hid, version: VERSION }, value: 1 },
  ]);
  m.gauge("picoclaw_nodes", "Swarm members this node knows, by status (itself included when it is a member).", () => {
    const counts: Record<string, number> = Object.fromEntries(PEER_STATUSES.map((s) => [s, 0]));
    for (const p of n.membership.registry.values()) if (MEMBER_ROLES.includes(p.info.role as Role)) counts[p.status]!++;
    if (!n.observer) counts[n.info().status]!++;
    return Object.entries(counts).map(([status, value]) => ({ labels: { status }, value }));
  });
  m.gauge("picoclaw_subtasks_queued", 'Sub-tasks waiting in the TASKS stream, by capability (pinned ones as "(direct)").', () =>
    Object.entries(n.queue.value().byCapability).map(([capability, value]) => ({ labels: { capability }, value })),
  );
  m.gauge("picoclaw_running", "Work this node runs now: sub-tasks on workers, requests on coordinators.", () => [
    { value: n.info().running },
  ]);
  m.gauge("picoclaw_nats_connected", "1 while the NATS connection is up.", () => [{ value: n.link.state() === "connected" ? 1 : 0 }]);
  m.counterOf("picoclaw_nats_reconnects_total", "Times the NATS connection was lost (each followed by reconnect attempts).", () => [
    { value: n.link.disconnects() },
  ]);
  m.counterOf("picoclaw_bad_messages_total", "Malformed messages this node dropped.", () => [{ value: n.bad.total() }]);
  m.counterOf(
    "picoclaw_refused_total",
    "Well-formed messages and KV records this node refused (unsigned, untrusted, replayed, failing their schema), by kind.",
    () => Object.entries(n.bad.refused()).map(([kind, value]) => ({ labels: { kind }, value })),
  );
}

/** A node's token counts for its heartbeat, from its LLM token counter. */
export function nodeTokens(samples: Sample[]): NodeTokens {
  const t: NodeTokens = { prompt: 0, completion: 0, by_model: {}, by_capability: {} };
  for (const { labels = {}, value } of samples) {
    if (labels.type === "prompt") t.prompt += value;
    else if (labels.type === "completion") t.completion += value;
    else continue;
    const model = labels.model ?? "(unknown)";
    const capability = labels.capability ?? "(other)";
    t.by_model[model] = (t.by_model[model] ?? 0) + value;
    t.by_capability[capability] = (t.by_capability[capability] ?? 0) + value;
  }
  return { ...t, by_model: busiest(t.by_model, MAX_TOKEN_KEYS_REPORTED), by_capability: busiest(t.by_capability, MAX_TOKEN_KEYS_REPORTED) };
}

/** The `n` subjects with the most dropped messages. */
function busiest(counts: Record<string, number>, n: number): Record<string, number> {
  return Object.fromEntries(
    Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => [k.slice(0, 300), v]),
  );
}
