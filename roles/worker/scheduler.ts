// When a worker takes work: it pulls only while a slot is free, highest priority first, its own
// direct queue before everything; from a burst it takes one sub-task plus its fair share of the rest;
// a copy of each new sub-task (the doorbell) wakes it, and an idle poll catches what no doorbell
// announces (redeliveries after a nak with delay).
import type { JsMsg, NatsConnection, Subscription } from "nats";
import { createDoorbell } from "../../lib/doorbell.ts";
import { pullAvailable } from "../../lib/pull.ts";

export interface Queue {
  durable: string;
  /** The subject the doorbell copy arrives on. */
  subject: string;
  /** Absent for the node's direct queue (nobody shares it). */
  capability?: string;
}

export interface SchedulerOptions {
  nc: NatsConnection;
  stream: string;
  /** Highest priority first. */
  queues: Queue[];
  /** Doorbell subscriptions: every subject a new sub-task for us may be published on. */
  doorbells: string[];
  maxConcurrent: number;
  /** How many other online nodes pull this capability: a burst is shared with them. */
  peersWith(capability: string): number;
  /** Runs one pulled message to its end (ack, nak or term); the slot frees when it settles. */
  run(msg: JsMsg): Promise<void>;
  /** `run` failed in a way it did not handle itself (a bug): the slot is freed all the same. */
  onError(err: unknown): void;
  /** Creates a queue's consumer again when the server says it is gone; true when it did. */
  recreate(q: Queue): Promise<boolean>;
}

export interface Scheduler {
  /** Looks whether a queue's consumer is still there, and creates it again (and pulls) if not. */
  recreateIfGone(q: Queue): void;
  /** Stops pulling; whatever was pulled but not started is handed back. Resolves when the loop ended. */
  stop(): Promise<void>;
}

const IDLE_POLL_MS = 1_000;
const ANNOUNCE_GRACE_MS = 50;
const SHARE_WAIT_MS = 10;
// A pull answers at once; one that does not (a consumer leader still being elected in a cluster)
// should not hold up the other queues for long.
const PULL_TIMEOUT_MS = 1_000;
/** A consumer found gone is created again at most this often. */
const RECREATE_EVERY_MS = 5_000;

export function startScheduler(o: SchedulerOptions): Scheduler {
  const { nc, stream, queues } = o;
  let stopping = false;
  // `slots` counts sub-tasks from the moment they are pulled, so max_concurrent holds even while one
  // is still being checked before it is marked running.
  let slots = 0;
  const bell = createDoorbell();
  const wake = () => bell.ring();

  // Which queues may hold work. A pull that finds one empty clears it, unless work was announced for
  // it meanwhile (the generation moved on); the idle poll marks them all again (naks with delay come
  // back without any announcement). So an idle node does not ask every queue on every wake-up.
  const order = queues.map((q) => q.durable);
  const durableOf = new Map(queues.map((q) => [q.subject, q.durable]));
  const generation = new Map(order.map((d) => [d, 1]));
  const maybeWork = new Set(order);
  const announcedAt = new Map<string, number>();
  const announce = (subject: string) => {
    const durable = durableOf.get(subject);
    if (!durable) return;
    generation.set(durable, generation.get(durable)! + 1);
    announcedAt.set(durable, Date.now());
    maybeWork.add(durable);
    wake();
  };
  // A consumer deleted under us (its inactive threshold while every slot was busy, or by hand): create
  // it again, then look at it again. Otherwise work pinned to this node would wait for nobody.
  const recreatedAt = new Map<string, number>();
  const recreate = (q: Queue) => {
    if (stopping || Date.now() - (recreatedAt.get(q.durable) ?? 0) < RECREATE_EVERY_MS) return;
    recreatedAt.set(q.durable, Date.now());
    o.recreate(q).then(
      () => {
        maybeWork.add(q.durable);
        wake();
      },
      () => {}, // tried again at the next sign of it
    );
  };
  const doorbells: Subscription[] = o.doorbells.map((subject) => nc.subscribe(subject, { callback: (_e, m) => announce(m.subject) }));

  const take = (batch: JsMsg[]) => {
    for (const msg of batch) {
      if (stopping) {
        msg.nak();
        continue;
      }
      slots++;
      o.run(msg)
        .catch(o.onError)
        .finally(() => {
          slots--;
          wake();
        });
    }
  };

  // Up to `max` messages from the first queue (in priority order) that has any, each handed over as
  // soon as it is here. One message first; if more are waiting, a fair share of them in one more pull:
  // sub-tasks are long (LLM calls), so a burst should go to every idle node, not all to the first one
  // that woke up.
  const pullBatch = async (max: number): Promise<{ taken: number; leftForPeers: boolean }> => {
    for (const q of queues) {
      const { durable } = q;
      if (!maybeWork.has(durable)) continue;
      const gen = generation.get(durable);
      const onGone = () => recreate(q);
      let got = await pullAvailable(nc, { stream, durable, max: 1, waitMs: 0, timeoutMs: PULL_TIMEOUT_MS, onGone });
      // The copy of a message can reach us a moment before the consumer can hand it out: right after
      // an announcement, wait briefly for it instead of giving up until the next poll.
      if (got.length === 0 && Date.now() - (announcedAt.get(durable) ?? 0) < ANNOUNCE_GRACE_MS) {
        got = await pullAvailable(nc, { stream, durable, max: 1, waitMs: ANNOUNCE_GRACE_MS, timeoutMs: PULL_TIMEOUT_MS, onGone });
      }
      if (got.length > 0) {
        // Started before the second pull: nats-server 2.9 sometimes leaves a no-wait pull that finds
        // nothing unanswered, and this sub-task must not wait out our timeout for it.
        take(got);
        const sharers = 1 + (q.capability ? o.peersWith(q.capability) : 0);
        const more = Math.min(max - 1, Math.ceil(got[0]!.info.pending / sharers));
        const extra =
          more > 0 ? await pullAvailable(nc, { stream, durable, max: more, waitMs: 0, timeoutMs: PULL_TIMEOUT_MS, onGone }) : [];
        take(extra);
        const left = (extra.at(-1) ?? got[0]!).info.pending;
        const taken = got.length + extra.length;
        // Empty now, and nothing announced since we asked: no need to ask again until a doorbell.
        if (left === 0 && generation.get(durable) === gen) maybeWork.delete(durable);
        return { taken, leftForPeers: sharers > 1 && left > 0 && taken < max };
      }
      if (generation.get(durable) === gen) maybeWork.delete(durable);
    }
    return { taken: 0, leftForPeers: false };
  };

  const loop = (async () => {
    while (!stopping) {
      while (!stopping && slots < o.maxConcurrent) {
        const wasIdle = slots === 0;
        const { taken, leftForPeers } = await pullBatch(o.maxConcurrent - slots);
        if (taken === 0) break;
        // An idle node that took its share of a burst lets its peers (woken by the same burst) take
        // theirs before it comes back for the rest. Busy nodes pull on: under steady load the work
        // spreads by itself, and waiting would only idle slots.
        if (leftForPeers && wasIdle) await Bun.sleep(SHARE_WAIT_MS);
      }
      const rung = await bell.wait(IDLE_POLL_MS);
      if (!rung) for (const d of order) maybeWork.add(d);
    }
  })();

  return {
    recreateIfGone: (q) => recreate(q),
    async stop() {
      stopping = true;
      for (const s of doorbells) s.unsubscribe();
      wake();
      await loop;
    },
  };
}
