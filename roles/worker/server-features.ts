// What the connected nats-server can do beyond 2.9, the oldest one supported, from the INFO it sends on
// connect. nats-server 2.9 silently ignores stream and consumer fields it does not know (allow_msg_ttl,
// priority_groups, ...) and headers such as Nats-TTL, so a create that succeeds proves nothing: check here.
import type { NatsConnection } from "nats";

/**
 * The JetStream API level the server advertises (`api_lvl` in INFO): 0 before 2.11 (2.9 and 2.10 send
 * none), 1 on 2.11, 2 on 2.12, 5 on 2.15. It describes the server this connection is on: in a cluster
 * being upgraded, other servers may be older.
 */
export function jsApiLevel(nc: NatsConnection): number {
  const level = (nc.info as { api_lvl?: unknown } | undefined)?.api_lvl;
  return typeof level === "number" && Number.isInteger(level) && level > 0 ? level : 0;
}

/**
 * Whether an `inactive_threshold` on a durable pull consumer is safe: from 2.12 (API level 2) messages
 * still within ack_wait keep the consumer alive (nats-server PR 7052; 2.10 and 2.11 delete it even then),
 * and a pull for a consumer that is gone is answered (503) rather than left unanswered as 2.9 does.
 */
export function durableInactivitySafe(nc: NatsConnection): boolean {
  return jsApiLevel(nc) >= 2;
}
