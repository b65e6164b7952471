// Membership over NATS: announce, query on start, heartbeats, peer registry and the guide's log lines.
import { type Msg, type NatsConnection, RequestStrategy, type Subscription } from "nats";
import type { BadInputCounter } from "./bad-input.ts";
import type { Logger } from "./log.ts";
import { announceSchema, decode, encode, type NodeInfo, nodeInfoSchema, querySchema } from "./messages.ts";
import { RECONNECT_WAIT_MAX_MS } from "./nats-connection.ts";
import { createRegistry, leave, observe, type Registry, type RegistryEvent, remember, sweep, type Timing } from "./registry.ts";
import { nodeIdFromHeartbeat, type SwarmNames } from "./subjects.ts";

export interface MembershipOptions {
  nc: NatsConnection;
  names: SwarmNames;
  log: Logger;
  bad: BadInputCounter;
  /** This node's current self-description (called for every heartbeat and query reply). */
  self: () => NodeInfo;
  heartbeatInterval: number;
  nodeTimeout: number;
  /** An observer (the dashboard) listens and queries but never announces itself. */
  observer?: boolean;
  /** Whether our own NATS connection is up: while it is down we hear no one, so we judge no one. */
  connected?: () => boolean;
  /** How long to collect answers to the start-up query. */
  queryWindowMs?: number;
  /** Peers kept at most (swarm.max_nodes). */
  maxPeers?: number;
  onEvent?: (e: RegistryEvent) => void;
}

export interface Membership {
  registry: Registry;
  /** Resolves when the start-up query window has closed. */
  discovered: Promise<void>;
  /** Joins: announcement, the self `Node joined swarm` line, heartbeats. Call once the node is ready. */
  announce(): void;
  /** Publishes a heartbeat now (a task started or finished), at most every 100 ms. */
  heartbeatNow(): void;
  /** Announces a graceful leave and stops heartbeats and subscriptions. */
  stop(): Promise<void>;
}

export function startMembership(o: MembershipOptions): Membership {
  const { nc, names, log, bad } = o;
  const registry = createRegistry();
  const me = o.self();
  const subs: Subscription[] = [];
  // Offline peers stay listed (as offline) for five node timeouts, then are forgotten.
  const timing = { nodeTimeout: o.nodeTimeout, forgetAfter: 5 * o.nodeTimeout };

  const apply = (events: RegistryEvent[]) => {
    for (const e of events) {
      logEvent(log, e);
      o.onEvent?.(e);
    }
  };
  const seen = (info: NodeInfo, subject: string) => {
    if (info.node === me.node && info.sid === me.sid) return;
    const events = observe(registry, info, Date.now(), o.maxPeers);
    if (events) apply(events);
    else bad.record(subject, `registry full (${o.maxPeers} nodes): a node not seen before is not tracked`);
  };

  subs.push(
    nc.subscribe(names.heartbeatAll, {
      callback: (_err, msg) => {
        const d = decode(nodeInfoSchema, msg.data);
        if (!d.ok) return bad.record(msg.subject, d.reason);
        if (nodeIdFromHeartbeat(names, msg.subject) !== d.value.node) {
          return bad.record(msg.subject, "schema: node id does not match subject");
        }
        seen(d.value, msg.subject);
      },
    }),
  );

  subs.push(
    nc.subscribe(names.announce, {
      callback: (_err, msg) => {
        const d = decode(announceSchema, msg.data);
        if (!d.ok) return bad.record(msg.subject, d.reason);
        const { kind, info } = d.value;
        if (info.node === me.node && info.sid === me.sid) return;
        if (kind === "join") seen(info, msg.subject);
        else apply(leave(registry, info.node, info.sid));
      },
    }),
  );

  if (!o.observer) {
    subs.push(
      nc.subscribe(names.query, {
        callback: (_err, msg: Msg) => {
          const d = decode(querySchema, msg.data);
          if (!d.ok) return bad.record(msg.subject, d.reason);
          if (d.value.from === me.node || !msg.reply) return;
          msg.respond(encode(o.self()));
        },
      }),
    );
  }

  const publishHeartbeat = () => {
    if (!nc.isClosed()) nc.publish(names.heartbeat(me.node), encode(o.self()));
  };
  let heartbeat: Timer | undefined;
  // Sweep often enough that a dead peer is offline within nodeTimeout + heartbeatInterval.
  let wasConnected = true;
  let judging = false;
  const sweepEvery = Math.max(20, Math.min(1_000, o.heartbeatInterval / 2));
  const sweeper = setInterval(() => {
    const connected = o.connected?.() ?? true;
    if (connected && !wasConnected) {
      // Back from our own outage: peers get a fresh start instead of being judged on our silence, and the
      // time they may need to find the server back (they retry on the same schedule, and we may have
      // been the first in): a NATS blip must not mark healthy nodes offline.
      const now = Date.now() + RECONNECT_WAIT_MAX_MS;
      for (const peer of registry.values()) peer.lastSeen = Math.max(peer.lastSeen, now);
    }
    wasConnected = connected;
    if (!connected || judging) return;
    const now = Date.now();
    const due = [...registry.values()].some((p) => p.status !== "offline" && now - p.lastSeen >= timing.nodeTimeout);
    if (!due) return apply(sweep(registry, now, timing));
    // Before calling anyone offline, make sure we are not the one behind: a round trip to the server
    // delivers (and so processes) every heartbeat that reached it before our PING. A node flooded with
    // input, or starved of CPU, would otherwise blame its peers for its own backlog.
    judging = true;
    Promise.race([nc.flush().then(() => true), Bun.sleep(timing.nodeTimeout).then(() => false)])
      .then((caughtUp) => {
        if (caughtUp) apply(sweep(registry, Date.now(), timing));
      })
      .catch(() => {})
      .finally(() => {
        judging = false;
      });
  }, sweepEvery);

  const discovered = queryPeers(o, seen, () => rememberStored(o, registry, timing, apply));

  let lastExtra = 0;
  let pendingExtra: Timer | undefined;
  return {
    registry,
    discovered,
    announce() {
      if (o.observer || heartbeat) return;
      nc.publish(names.announce, encode({ v: 1, kind: "join", info: o.self() }));
      log.info("Node joined swarm", { node: me.node, role: me.role, capabilities: me.capabilities.join(","), self: true });
      publishHeartbeat();
      heartbeat = setInterval(publishHeartbeat, o.heartbeatInterval);
    },
    heartbeatNow() {
      if (o.observer || pendingExtra) return;
      const wait = Math.max(0, lastExtra + 100 - Date.now());
      pendingExtra = setTimeout(() => {
        pendingExtra = undefined;
        lastExtra = Date.now();
        publishHeartbeat();
      }, wait);
    },
    async stop() {
      clearTimeout(pendingExtra);
      clearInterval(heartbeat);
      clearInterval(sweeper);
      if (!o.observer && !nc.isClosed()) {
        nc.publish(names.announce, encode({ v: 1, kind: "leave", info: o.self() }));
        // A dashboard started later must not find our last heartbeat and call us offline: we left.
        await nc
          .jetstreamManager({ timeout: 2_000 })
          .then((jsm) => jsm.streams.purge(names.streams.nodes, { filter: names.heartbeat(me.node) }))
          .catch(() => {});
        await nc.flush().catch(() => {});
        log.info("Node left swarm", { node: me.node, role: me.role, reason: "graceful", self: true });
      }
      for (const s of subs) s.unsubscribe();
    },
  };
}

/** One round trip to learn who is already there. */
async function queryPeers(
  o: MembershipOptions,
  seen: (info: NodeInfo, subject: string) => void,
  remembered: () => Promise<void>,
): Promise<void> {
  const me = o.self();
  // Who was there before we came, from the stored heartbeats: the silent ones show as offline.
  await remembered();
  try {
    const replies = await o.nc.requestMany(o.names.query, encode({ v: 1, from: me.node }), {
      strategy: RequestStrategy.Timer,
      maxWait: o.queryWindowMs ?? 1_000,
    });
    for await (const msg of replies) {
      const d = decode(nodeInfoSchema, msg.data);
      if (d.ok) seen(d.value, o.names.query);
      else o.bad.record(`${o.names.query} (reply)`, d.reason);
    }
  } catch (err) {
    // No responders simply means we are the first node.
    if (!/503|no responders/i.test(String((err as Error).message))) {
      o.log.debug("Node query failed", { error: (err as Error).message });
    }
  }
}

/** Seeds the registry with every node's last stored heartbeat (nodes that went quiet before we started). */
async function rememberStored(
  o: MembershipOptions,
  registry: Registry,
  timing: Timing,
  apply: (e: RegistryEvent[]) => void,
): Promise<void> {
  const me = o.self();
  try {
    const jsm = await o.nc.jetstreamManager({ timeout: 2_000 });
    const info = await jsm.streams.info(o.names.streams.nodes, { subjects_filter: o.names.heartbeatAll });
    const subjects = Object.keys(info.state.subjects ?? {}).slice(0, o.maxPeers ?? Number.POSITIVE_INFINITY);
    const stored = await Promise.all(
      subjects.map((s) => jsm.streams.getMessage(o.names.streams.nodes, { last_by_subj: s }).catch(() => undefined)),
    );
    const now = Date.now();
    for (const m of stored) {
      if (!m) continue;
      const d = decode(nodeInfoSchema, m.data);
      if (!d.ok || nodeIdFromHeartbeat(o.names, m.subject) !== d.value.node || d.value.node === me.node) continue;
      apply(remember(registry, d.value, Math.min(now, m.time.getTime()), now, timing));
    }
  } catch (err) {
    // No stream yet (nobody ever started), or no right to read it: we learn from heartbeats alone.
    o.log.debug("Stored heartbeats not read", { error: (err as Error).message });
  }
}

function logEvent(log: Logger, e: RegistryEvent): void {
  const { info } = e.peer;
  const f = { node: info.node, role: info.role };
  switch (e.kind) {
    case "joined":
      log.info("Node joined swarm", { ...f, capabilities: info.capabilities.join(","), max_concurrent: info.max_concurrent });
      return;
    case "restarted":
      log.info("Node joined swarm", { ...f, capabilities: info.capabilities.join(","), restarted: true });
      return;
    case "offline":
      log.info("Node marked offline", {
        ...f,
        silent_ms: e.silentMs,
        running_tasks: info.running,
        tasks: info.tasks?.map((t) => `${t.request}/${t.task}`).join(",") || undefined,
      });
      return;
    case "suspicious":
      log.debug("Node suspicious (heartbeat late)", { ...f, silent_ms: e.silentMs });
      return;
    case "back":
      log.info("Node back online", { ...f, was: e.after });
      return;
    case "left":
      log.info("Node left swarm", { ...f, reason: "graceful" });
      return;
    case "forgotten":
      log.debug("Node forgotten", f);
      return;
  }
}
