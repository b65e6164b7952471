// A running swarm node (or observer): NATS link, identity, membership, Temporal, and its dashboard view.
import { hostname } from "node:os";
import { type BadInputCounter, createBadInputCounter } from "./bad-input.ts";
import type { Config } from "./config.ts";
import { serveControl } from "./control.ts";
import { type Coordinator, startCoordinator } from "./coordinator.ts";
import { type EmbeddedNats, ensureEmbeddedNats } from "./embedded-nats.ts";
import { ConfigError, JetStreamMissingError } from "./errors.ts";
import { type Executor, startExecutor } from "./executor.ts";
import { type Identity, resolveIdentity } from "./identity.ts";
import { createLlm } from "./llm.ts";
import type { Logger } from "./log.ts";
import { type Membership, startMembership } from "./membership.ts";
import { MAX_BAD_SUBJECTS_REPORTED, type NodeInfo, type NodeRole } from "./messages.ts";
import { type NatsLink, openNats } from "./nats-connection.ts";
import { buildSnapshot } from "./node-snapshot.ts";
import { queueGauge } from "./queue-gauge.ts";
import type { RegistryEvent } from "./registry.ts";
import { onlineCapabilities, onlineNodes } from "./registry.ts";
import { loadSigner } from "./signing.ts";
import type { DashboardSnapshot } from "./snapshot.ts";
import { ensureStreams } from "./streams.ts";
import { type SwarmNames, swarmNames } from "./subjects.ts";
import { connectTemporal, type TemporalLink } from "./temporal.ts";
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
  await requireJetStream(link, embedded ? cfg.swarm.nats.embedded_port : undefined);
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
      bad: { total: bad.total(), by_subject: busiest(bad.counts(), MAX_BAD_SUBJECTS_REPORTED) },
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
    const llm = await createLlm(cfg.llm);
    if (llm.kind === "echo") {
      log.warn(
        "LLM: echo provider (offline, no LLM configured); set PICOCLAW_LLM_BASE_URL / PICOCLAW_LLM_MODEL / PICOCLAW_LLM_API_KEY for a real one",
      );
    } else log.info("LLM provider", { llm: llm.label });
    const signer = loadSigner(cfg);
    if (signer) {
      const list = role === "coordinator" ? "trusted_workers" : "trusted_coordinators";
      if (cfg.swarm.security[list].length === 0) {
        throw new ConfigError(
          `swarm.security.${list}`,
          "config",
          `the public keys of the ${role === "coordinator" ? "workers and specialists" : "coordinators"} to trust when signing is on`,
          [],
        );
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
      executor = await startExecutor({
        ...common,
        capabilities: caps,
        onChange: () => membership.heartbeatNow(),
        peersWith: (capability) => onlineCapabilities(membership.registry).get(capability) ?? 0,
      });
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

/** The `n` subjects with the most dropped messages. */
function busiest(counts: Record<string, number>, n: number): Record<string, number> {
  return Object.fromEntries(
    Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => [k.slice(0, 300), v]),
  );
}

/** Fails start-up with a clear reason when the server has no JetStream (instead of a KV error later). */
export async function requireJetStream(link: NatsLink, embeddedPort?: number): Promise<void> {
  try {
    const jsm = await link.nc.jetstreamManager({ timeout: 5_000 });
    await jsm.getAccountInfo();
  } catch (err) {
    if (/503|not enabled|no responders/i.test(String((err as Error)?.message))) {
      await link.nc.close();
      throw new JetStreamMissingError(link.url(), embeddedPort);
    }
    throw err;
  }
}
