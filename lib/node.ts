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
import { type Identity, resolveIdentity } from "./identity.ts";
import type { Logger } from "./log.ts";
import { type Membership, startMembership } from "./membership.ts";
import { MAX_BAD_SUBJECTS_REPORTED, type NodeInfo, type NodeRole, type RunningTask } from "./messages.ts";
import { type NatsLink, openNats, requireJetStream } from "./nats-connection.ts";
import type { RegistryEvent } from "./registry.ts";
import { untilStopSignal } from "./signals.ts";
import { ensureStreams } from "./streams.ts";
import { type SwarmNames, swarmNames } from "./subjects.ts";
import { connectTemporal, type TemporalLink } from "./temporal.ts";
import { VERSION } from "./version.ts";

/** What a role reports about its work in every heartbeat, and how it stops. */
export interface RoleWork {
  /** Work in progress: sub-tasks for workers, requests for coordinators. */
  load(): { running: number; tasks?: RunningTask[]; done?: number; failed?: number };
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
  temporal(): TemporalLink;
  info(): NodeInfo;
  /** Peer events (joined, offline, left, ...), after the node logged them. */
  onPeerEvent(listener: (e: RegistryEvent) => void): void;
  /** The role's work is set up: announce the node and heartbeat its load. Members only. */
  ready(work: RoleWork): void;
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
  /** Observers (the dashboard) join no swarm: no announcement, no heartbeat, not counted. */
  observer?: boolean;
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

export async function startMember(cfg: Config, log: Logger): Promise<MemberNode> {
  const node = await startNode(cfg, log);
  const jsm = await ensureStreams(node.link.nc, node.names, cfg);
  return Object.assign(node, { jsm });
}

export async function startNode(cfg: Config, log: Logger, opts: StartOptions = {}): Promise<SwarmNode> {
  const role: NodeRole = opts.observer ? "dashboard" : cfg.swarm.role;
  const embedded = await prepareEmbedded(cfg, log);
  const link = await openNats(cfg, `picoclaw-${role}`, log);
  await requireJetStream(link, embedded ? cfg.swarm.nats.embedded_port : undefined);
  const identity = await resolveIdentity(cfg, link.nc);
  const names = swarmNames(identity.hid);
  const bad = createBadInputCounter(log);
  const startedAt = Date.now();
  const nats = cfg.swarm.nats;
  if (identity.hidSource !== "configured") {
    log.debug("Using the deployment's default H-id", { hid: identity.hid, how: identity.hidSource });
  }

  let work: RoleWork | undefined;
  let draining = false;
  const info = (): NodeInfo => {
    const load = work?.load() ?? { running: 0 };
    const max = opts.observer ? 0 : cfg.swarm.max_concurrent;
    return {
      v: 1,
      node: identity.node,
      sid: identity.sid,
      role,
      capabilities: opts.observer ? [] : cfg.swarm.capabilities,
      max_concurrent: max,
      running: load.running,
      tasks: load.tasks ?? [],
      done: load.done ?? 0,
      failed: load.failed ?? 0,
      bad: { total: bad.total(), by_subject: busiest(bad.counts(), MAX_BAD_SUBJECTS_REPORTED) },
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
    observer: opts.observer,
    connected: () => link.state() === "connected",
    queryWindowMs: opts.queryWindowMs,
    onEvent: (e) => {
      for (const listener of peerListeners) listener(e);
    },
  });

  let temporal: TemporalLink = { enabled: false, connected: false, address: "", close: async () => {} };
  const temporalReady = connectTemporal(cfg, log).then((t) => {
    temporal = t;
  });

  let requestStop: (why: string) => void = () => {};
  const stopRequested = new Promise<string>((r) => {
    requestStop = r;
  });
  const control = opts.observer
    ? undefined
    : serveControl({ nc: link.nc, names, node: identity.node, log, bad, onStop: (a) => requestStop(a) });

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
    temporal: () => temporal,
    info,
    onPeerEvent: (listener) => peerListeners.push(listener),
    ready(w) {
      work = w;
      membership.announce();
    },
    stopRequested,
    stop: (graceMs = cfg.swarm.drain_grace) => {
      stopped ??= (async () => {
        control?.unsubscribe();
        draining = true;
        membership.heartbeatNow(); // peers stop routing to us while we drain
        await work?.stop(graceMs);
        await membership.stop();
        await temporalReady;
        await temporal.close().catch(() => {});
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
  const node = await startMember(cfg, log);
  await setUp(node);
  if (then) return then(node, signalled);
  const why = await Promise.race([signalled, node.stopRequested]);
  await node.stop(why === "shutdown" ? 0 : cfg.swarm.drain_grace);
  return 0;
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
