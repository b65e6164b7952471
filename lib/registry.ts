// What one node knows of its peers. Pure: feed it observations and the clock, it returns what changed.
import type { NodeInfo, PeerStatus } from "./messages.ts";

/** Capability -> number of online nodes offering it. "general" means a worker that takes general tasks. */
export type OnlineCapabilities = Map<string, number>;

export interface Peer {
  info: NodeInfo;
  status: PeerStatus;
  /** Local clock time of the last heartbeat, announcement or query reply. */
  lastSeen: number;
  /** When status last changed (local clock). */
  since: number;
}

export type RegistryEvent =
  | { kind: "joined"; peer: Peer }
  | { kind: "restarted"; peer: Peer; previousSid: string }
  | { kind: "suspicious"; peer: Peer; silentMs: number }
  | { kind: "offline"; peer: Peer; silentMs: number }
  | { kind: "back"; peer: Peer; after: PeerStatus }
  | { kind: "left"; peer: Peer }
  | { kind: "forgotten"; peer: Peer };

export interface Timing {
  /** No heartbeat for this long: offline. */
  nodeTimeout: number;
  /** Offline for this long: removed from the registry. */
  forgetAfter: number;
}

export type Registry = Map<string, Peer>;

export function createRegistry(): Registry {
  return new Map();
}

/** The status a peer reports for itself (online / busy / draining). */
function reported(info: NodeInfo): PeerStatus {
  return info.status;
}

/**
 * A heartbeat, join announcement or query reply from `info.node`. A registry holds at most `maxPeers`:
 * a new node beyond that takes the place of the one offline longest, or is not kept at all (undefined),
 * so spoofed heartbeats from random ids cannot grow it without bound.
 */
export function observe(reg: Registry, info: NodeInfo, now: number, maxPeers = Number.POSITIVE_INFINITY): RegistryEvent[] | undefined {
  const prev = reg.get(info.node);
  const status = reported(info);
  if (!prev) {
    const events: RegistryEvent[] = [];
    if (reg.size >= maxPeers) {
      const oldest = [...reg.values()].filter((p) => p.status === "offline").sort((a, b) => a.since - b.since)[0];
      if (!oldest) return undefined;
      reg.delete(oldest.info.node);
      events.push({ kind: "forgotten", peer: oldest });
    }
    const peer: Peer = { info, status, lastSeen: now, since: now };
    reg.set(info.node, peer);
    return [...events, { kind: "joined", peer }];
  }
  const events: RegistryEvent[] = [];
  if (prev.info.sid !== info.sid) {
    // Same node id, new process: a restart. Report it as a (re)join so peers log it.
    const peer: Peer = { info, status, lastSeen: now, since: now };
    reg.set(info.node, peer);
    return [{ kind: "restarted", peer, previousSid: prev.info.sid }];
  }
  const wasDown = prev.status === "offline" || prev.status === "suspicious";
  prev.info = info;
  prev.lastSeen = now;
  if (prev.status !== status) {
    if (wasDown) events.push({ kind: "back", peer: prev, after: prev.status });
    prev.status = status;
    prev.since = now;
  }
  return events;
}

/**
 * A node known from its last stored heartbeat (one that went quiet before we started is then already
 * offline, without an event: we did not see it go). A recent one joins as if it had answered our query.
 */
export function remember(reg: Registry, info: NodeInfo, seenAt: number, now: number, t: Timing): RegistryEvent[] {
  if (reg.has(info.node) || now - seenAt >= t.forgetAfter) return [];
  const offline = now - seenAt >= t.nodeTimeout;
  const peer: Peer = { info, status: offline ? "offline" : reported(info), lastSeen: seenAt, since: offline ? now : seenAt };
  reg.set(info.node, peer);
  return offline ? [] : [{ kind: "joined", peer }];
}

/** A graceful leave: removed at once, never reported as a failure. */
export function leave(reg: Registry, node: string, sid: string): RegistryEvent[] {
  const peer = reg.get(node);
  if (!peer || peer.info.sid !== sid) return [];
  reg.delete(node);
  return [{ kind: "left", peer }];
}

/** Ages every peer: suspicious after one missed heartbeat, offline after nodeTimeout, then forgotten. */
export function sweep(reg: Registry, now: number, t: Timing): RegistryEvent[] {
  const events: RegistryEvent[] = [];
  for (const [id, peer] of reg) {
    const silent = now - peer.lastSeen;
    if (peer.status === "offline") {
      if (now - peer.since >= t.forgetAfter) {
        reg.delete(id);
        events.push({ kind: "forgotten", peer });
      }
    } else if (silent >= t.nodeTimeout) {
      peer.status = "offline";
      peer.since = now;
      events.push({ kind: "offline", peer, silentMs: silent });
    } else if (peer.status !== "suspicious" && silent > 2 * peer.info.heartbeat_interval) {
      peer.status = "suspicious";
      peer.since = now;
      events.push({ kind: "suspicious", peer, silentMs: silent });
    }
  }
  return events;
}

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

/** Capabilities a peer takes work of: a worker also takes `general`. */
function takes(info: NodeInfo): Set<string> {
  return info.role === "worker" ? new Set(["general", ...info.capabilities]) : new Set(info.capabilities);
}

/**
 * Online executors that take `capability` and offer every tool in `tools`, least busy first: where a
 * sub-task that needs tools is sent (routed like a capability, to one node's direct queue).
 */
export function nodesWithTools(registry: Registry, capability: string, tools: string[], exclude: Set<string> = new Set()): string[] {
  const fit: Peer[] = [];
  for (const peer of registry.values()) {
    const { info } = peer;
    if (peer.status === "offline" || peer.status === "draining" || exclude.has(info.node)) continue;
    if (info.role !== "worker" && info.role !== "specialist") continue;
    const has = new Set(info.tools ?? []);
    if (takes(info).has(capability) && tools.every((t) => has.has(t))) fit.push(peer);
  }
  return fit
    .sort((a, b) => a.info.running / Math.max(1, a.info.max_concurrent) - b.info.running / Math.max(1, b.info.max_concurrent))
    .map((p) => p.info.node);
}

/** Capability -> the tools its online executors offer (the planner is told; plans are checked against it). */
export function onlineTools(registry: Registry): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const peer of registry.values()) {
    if (peer.status === "offline" || peer.status === "draining") continue;
    if (peer.info.role !== "worker" && peer.info.role !== "specialist") continue;
    for (const cap of takes(peer.info)) {
      const set = out.get(cap) ?? new Set<string>();
      for (const t of peer.info.tools ?? []) set.add(t);
      out.set(cap, set);
    }
  }
  return out;
}
