// Nothing grows with restarts: every node has a direct queue (a durable consumer `d_<node>`) for sub-tasks
// pinned to it. A node that leaves deletes its own; one that crashed leaves it behind, and a new node id
// per start would add one per restart. The leader removes the queues of nodes it has forgotten (offline
// for five node timeouts) once they hold nothing; a node cut off longer than that and back again creates
// its queue anew (roles/worker.ts). On 2.12+ servers the consumer's inactive threshold removes them too.
import type { JetStreamManager } from "nats";
import type { Logger } from "../../lib/log.ts";
import type { Registry } from "../../lib/registry.ts";
import type { SwarmNames } from "../../lib/subjects.ts";

export async function sweepDirectQueues(o: {
  jsm: JetStreamManager;
  names: SwarmNames;
  registry: Registry;
  /** Younger consumers may belong to a node that is starting and not yet heard of. */
  minAgeMs: number;
  log: Logger;
}): Promise<number> {
  let removed = 0;
  const now = Date.now();
  for await (const ci of o.jsm.consumers.list(o.names.streams.tasks)) {
    const of = o.names.consumers.parse(ci.name);
    if (of?.kind !== "direct") continue;
    // Only nodes forgotten (offline for five node timeouts): one merely cut off for a while comes back.
    if (o.registry.has(of.node)) continue;
    if (ci.num_pending > 0 || ci.num_ack_pending > 0) continue; // pinned work still there: not ours to drop
    if (now - Date.parse(ci.created) < o.minAgeMs) continue;
    await o.jsm.consumers.delete(o.names.streams.tasks, ci.name).then(
      () => removed++,
      () => {},
    );
  }
  if (removed > 0) o.log.info("Removed the direct queues of nodes that are gone", { removed });
  return removed;
}

/** Sweeps every few node timeouts while `leading()`; returns the function that stops it. */
export function sweepWhileLeading(o: {
  jsm: JetStreamManager;
  names: SwarmNames;
  registry: () => Registry;
  nodeTimeoutMs: number;
  leading: () => boolean;
  log: Logger;
}): () => void {
  const timer = setInterval(
    () => {
      if (!o.leading()) return;
      sweepDirectQueues({ ...o, registry: o.registry(), minAgeMs: 2 * o.nodeTimeoutMs }).catch((err) =>
        o.log.debug("Direct queues not swept", { error: (err as Error).message }),
      );
    },
    Math.max(5_000, 3 * o.nodeTimeoutMs),
  );
  return () => clearInterval(timer);
}
