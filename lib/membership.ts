// Membership over NATS: announce, query on start, heartbeats, peer registry and the guide's log lines.
import { type Msg, type NatsConnection, RequestStrategy, type Subscription } from "nats";
import type { BadInputCounter } from "./bad-input.ts";
import type { Logger } from "./log.ts";
import { announceSchema, decode, encode, type NodeInfo, nodeInfoSchema, querySchema } from "./messages.ts";
import { createRegistry, leave, observe, type Registry, type RegistryEvent, sweep } from "./registry.ts";
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
  const timing = { nodeTimeout: o.nodeTimeout, forgetAfter: Math.max(5 * o.nodeTimeout, 60_000) };

  const apply = (events: RegistryEvent[]) => {
    for (const e of events) {
      logEvent(log, e);
      o.onEvent?.(e);
    }
  };
  const seen = (info: NodeInfo) => {
    if (info.node === me.node && info.sid === me.sid) return;
    apply(observe(registry, info, Date.now()));
  };

  subs.push(
    nc.subscribe(names.heartbeatAll, {
      callback: (_err, msg) => {
        const d = decode(nodeInfoSchema, msg.data);
        if (!d.ok) return bad.record(msg.subject, d.reason);
        if (nodeIdFromHeartbeat(names, msg.subject) !== d.value.node) {
          return bad.record(msg.subject, "schema: node id does not match subject");
        }
        seen(d.value);
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
        if (kind === "join") seen(info);
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
  const sweeper = setInterval(
    () => {
      const connected = o.connected?.() ?? true;
      if (connected && !wasConnected) {
        // Back from our own outage: peers get a fresh start instead of being judged on our silence.
        const now = Date.now();
        for (const peer of registry.values()) peer.lastSeen = Math.max(peer.lastSeen, now);
      }
      wasConnected = connected;
      if (connected) apply(sweep(registry, Date.now(), timing));
    },
    Math.max(20, Math.min(1_000, o.heartbeatInterval / 2)),
  );

  const discovered = queryPeers(o, seen);

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
        await nc.flush().catch(() => {});
        log.info("Node left swarm", { node: me.node, role: me.role, reason: "graceful", self: true });
      }
      for (const s of subs) s.unsubscribe();
    },
  };
}

/** One round trip to learn who is already there. */
async function queryPeers(o: MembershipOptions, seen: (info: NodeInfo) => void): Promise<void> {
  const me = o.self();
  try {
    const replies = await o.nc.requestMany(o.names.query, encode({ v: 1, from: me.node }), {
      strategy: RequestStrategy.Timer,
      maxWait: o.queryWindowMs ?? 1_000,
    });
    for await (const msg of replies) {
      const d = decode(nodeInfoSchema, msg.data);
      if (d.ok) seen(d.value);
      else o.bad.record(`${o.names.query} (reply)`, d.reason);
    }
  } catch (err) {
    // No responders simply means we are the first node.
    if (!/503|no responders/i.test(String((err as Error).message))) {
      o.log.debug("Node query failed", { error: (err as Error).message });
    }
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
