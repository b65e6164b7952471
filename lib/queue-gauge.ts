// How many sub-tasks wait in the TASKS stream, per capability, read in the background (dashboards and
// /metrics ask often; JetStream is asked at most once a second).
import type { JetStreamManager, NatsConnection } from "nats";
import type { Logger } from "./log.ts";
import { isStreamNotFound } from "./nats-connection.ts";
import type { SwarmNames } from "./subjects.ts";

/** How often a read is considered fresh. */
const QUEUE_REFRESH_MS = 1_000;
/**
 * Capabilities reported at most: consumer names come from whoever may create consumers, so a flood of
 * made-up ones must not become as many metric series; the rest are summed under "(other)".
 */
export const MAX_QUEUE_LABELS = 100;

/** Bound on one JetStream API call, so a one-shot dashboard never hangs on a slow server. */
const QUEUE_API_TIMEOUT_MS = 2_000;

export interface Queued {
  /** Every sub-task waiting, pinned ones included. */
  total: number;
  /** Waiting per capability queue (pinned sub-tasks count under "(direct)"). */
  byCapability: Record<string, number>;
  /** Waiting per capability and priority, busiest first (pinned sub-tasks: "(direct)", priority null). */
  byQueue: { capability: string; priority: number | null; queued: number }[];
}

export interface QueueGauge {
  value(): Queued;
  refresh(): Promise<Queued>;
  refreshIfStale(): void;
}

/**
 * Sub-tasks waiting: num_pending over the TASKS stream's queue and direct consumers (in a work-queue
 * stream no message matches two consumers, so nothing is counted twice). Read through a lazily created
 * JetStreamManager, so an observer without streams of its own can do it too. A missing stream means
 * nothing was ever queued; any other failure keeps the last value. Never throws.
 */
export function queueGauge(nc: NatsConnection, names: SwarmNames, log: Logger): QueueGauge {
  let jsm: JetStreamManager | undefined;
  let queued: Queued = { total: 0, byCapability: {}, byQueue: [] };
  let readAt = 0;
  let inFlight: Promise<Queued> | undefined;

  const read = async (): Promise<Queued> => {
    try {
      jsm ??= await nc.jetstreamManager({ timeout: QUEUE_API_TIMEOUT_MS });
      const next: Queued = { total: 0, byCapability: {}, byQueue: [] };
      let direct = 0;
      for await (const ci of jsm.consumers.list(names.streams.tasks)) {
        const of = names.consumers.parse(ci.name);
        if (!of) continue;
        const key = of.kind === "queue" ? of.capability : "(direct)";
        next.total += ci.num_pending;
        next.byCapability[key] = (next.byCapability[key] ?? 0) + ci.num_pending;
        if (of.kind === "queue") next.byQueue.push({ capability: of.capability, priority: of.priority, queued: ci.num_pending });
        else direct += ci.num_pending;
      }
      if (direct > 0) next.byQueue.push({ capability: "(direct)", priority: null, queued: direct });
      next.byQueue.sort(
        (a, b) => b.queued - a.queued || a.capability.localeCompare(b.capability) || (b.priority ?? -1) - (a.priority ?? -1),
      );
      queued = bounded(next);
    } catch (err) {
      if (isStreamNotFound(err)) queued = { total: 0, byCapability: {}, byQueue: [] };
      else log.debug("Queue depth not read; keeping the last value", { stream: names.streams.tasks, error: (err as Error)?.message });
    }
    readAt = Date.now();
    return queued;
  };

  const refresh = () => {
    inFlight ??= read().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  return {
    value: () => queued,
    refresh,
    refreshIfStale() {
      if (!inFlight && Date.now() - readAt >= QUEUE_REFRESH_MS && !nc.isClosed()) void refresh();
    },
  };
}

/** At most MAX_QUEUE_LABELS capabilities (the busiest; the rest as "(other)") and as many queue rows. */
function bounded(q: Queued): Queued {
  const caps = Object.entries(q.byCapability);
  if (caps.length <= MAX_QUEUE_LABELS) return { ...q, byQueue: q.byQueue.slice(0, MAX_QUEUE_LABELS) };
  caps.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const byCapability = Object.fromEntries(caps.slice(0, MAX_QUEUE_LABELS - 1));
  byCapability["(other)"] = caps.slice(MAX_QUEUE_LABELS - 1).reduce((n, [, v]) => n + v, 0);
  return { total: q.total, byCapability, byQueue: q.byQueue.slice(0, MAX_QUEUE_LABELS) };
}
