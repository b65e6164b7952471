// Who this node is: swarm H-id (explicit, or adopted from the NATS deployment), node id, session id.
import type { KV, NatsConnection } from "nats";
import type { Config } from "./config.ts";
import { newHumanId, newNodeId, newSessionId, validateId } from "./ids.ts";
import { isTransientNatsError } from "./nats-connection.ts";
import { DEFAULT_HID_KEY, SWARM_BUCKET } from "./subjects.ts";

export interface Identity {
  hid: string;
  node: string;
  sid: string;
  /** "configured" or "adopted" (from the deployment's KV) or "created" (first node of the deployment). */
  hidSource: "configured" | "adopted" | "created";
}

/**
 * Unset H-id: the first node creates one atomically under a well-known KV key; every later node
 * adopts it, so nodes that configure none (the guide's compose and multi-machine examples) form one swarm.
 */
export async function resolveIdentity(cfg: Config, nc: NatsConnection): Promise<Identity> {
  const node = cfg.swarm.node_id ?? newNodeId();
  const sid = cfg.swarm.sid ?? newSessionId();
  validateId("node id", node);
  validateId("session id", sid);
  if (cfg.swarm.hid) return { hid: validateId("H-id", cfg.swarm.hid), node, sid, hidSource: "configured" };
  const { hid, created } = await adoptDeploymentHid(nc, cfg.swarm.nats.replicas);
  return { hid, node, sid, hidSource: created ? "created" : "adopted" };
}

export async function adoptDeploymentHid(nc: NatsConnection, replicas = 1): Promise<{ hid: string; created: boolean }> {
  let kv: KV;
  try {
    kv = await nc.jetstream().views.kv(SWARM_BUCKET, { history: 1, replicas });
  } catch (err) {
    // A time-out or 503 while JetStream elects leaders passes: the caller tries again (its code intact).
    if (isTransientNatsError(err)) throw err;
    throw new Error(
      `cannot adopt the swarm's H-id: KV bucket ${SWARM_BUCKET} cannot be opened (${(err as Error).message}). ` +
        `Is JetStream enabled (nats-server -js)? Or set --swarm.hid / PICOCLAW_SWARM_HID on every node.`,
      { cause: err },
    );
  }
  const candidate = newHumanId();
  for (let attempt = 0; attempt < 5; attempt++) {
    const existing = await kv.get(DEFAULT_HID_KEY);
    if (existing && existing.operation === "PUT") {
      const value = existing.string();
      return { hid: validateId("H-id stored in KV", value), created: false };
    }
    try {
      await kv.create(DEFAULT_HID_KEY, new TextEncoder().encode(candidate));
      return { hid: candidate, created: true };
    } catch (err) {
      // Someone else created it between our get and create: read theirs. A transient error goes up as is.
      if (isTransientNatsError(err)) throw err;
    }
  }
  throw new Error(`cannot agree on a default H-id in KV bucket ${SWARM_BUCKET}`);
}
