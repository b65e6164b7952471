// How many sub-tasks wait in the TASKS stream, read in the background for the dashboard.
import type { JetStreamManager, NatsConnection } from "nats";
import { ID_PATTERN } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { PRIORITIES, type SwarmNames } from "../../lib/subjects.ts";

/** How often snapshot() re-reads the queue depth in the background. */
const QUEUE_REFRESH_MS = 1_000;
/** Bound on one JetStream API call, so a one-shot dashboard never hangs on a slow server. */
const QUEUE_API_TIMEOUT_MS = 2_000;

export interface QueueGauge {
  value(): number;
  refresh(): Promise<number>;
  refreshIfStale(): void;
}

/**
 * Sub-tasks waiting in the TASKS stream: the sum of num_pending over its queue and direct consumers
 * (in a work-queue stream no message matches two consumers, so nothing is counted twice). Read through a
 * lazily created JetStreamManager, so an observer without streams of its own can do it too. A missing
 * stream means nothing was ever queued (0); any other failure keeps the last value. Never throws.
 */
export function queueGauge(nc: NatsConnection, names: SwarmNames, log: Logger): QueueGauge {
  const isTaskConsumer = taskConsumerMatcher(names);
  let jsm: JetStreamManager | undefined;
  let queued = 0;
  let readAt = 0;
  let inFlight: Promise<number> | undefined;

  const read = async (): Promise<number> => {
    try {
      jsm ??= await nc.jetstreamManager({ timeout: QUEUE_API_TIMEOUT_MS });
      let sum = 0;
      for await (const ci of jsm.consumers.list(names.streams.tasks)) {
        if (isTaskConsumer(ci.name)) sum += ci.num_pending;
      }
      queued = sum;
    } catch (err) {
      if (isStreamNotFound(err)) queued = 0;
      else log.debug("Queue depth not read; keeping the last value", { stream: names.streams.tasks, error: (err as Error)?.message });
    }
    readAt = Date.now();
    return queued;
  };

  const refresh = () => {
    inFlight ??= read().finally(() => (inFlight = undefined));
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

function isStreamNotFound(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string } | undefined;
  return e?.api_error?.err_code === 10059 || /stream not found/i.test(String(e?.message ?? ""));
}

/**
 * Recognises the consumer names of names.consumers.queue / .direct without spelling them here: each
 * shape is learnt by building a name around a marker and keeping what comes before and after it.
 */
function taskConsumerMatcher(names: SwarmNames): (name: string) => boolean {
  const MARK = "MARK";
  const shapes = [names.consumers.direct(MARK), ...PRIORITIES.map((p) => names.consumers.queue(MARK, p))].map((built) => {
    const at = built.indexOf(MARK);
    return { head: built.slice(0, at), tail: built.slice(at + MARK.length) };
  });
  return (name) =>
    shapes.some(
      ({ head, tail }) =>
        name.length > head.length + tail.length &&
        name.startsWith(head) &&
        name.endsWith(tail) &&
        ID_PATTERN.test(name.slice(head.length, name.length - tail.length)),
    );
}
