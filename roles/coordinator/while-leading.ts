// A leader's writes ride out a NATS blip: a time-out or a lost connection is retried in place (with
// backoff, said once at warn) for as long as the lease is ours, so no finished step is redone. Once the
// lease is gone the work is handed over instead (StaleLeaderError), never counted as a failure.
import type { Logger } from "../../lib/log.ts";
import { isTransientNatsError } from "../../lib/nats-connection.ts";
import { NATS_BACKOFF, withRetry } from "../../lib/retry.ts";
import { type Leadership, StaleLeaderError } from "./leadership.ts";

export type WhileLeading = <T>(what: string, work: () => Promise<T>) => Promise<T>;

/**
 * `boundMs`: past this (three lease TTLs) it is no blip but a failure, counted like any other: a request
 * that keeps failing ends as a dead letter instead of being retried for ever.
 */
export function retryWhileLeading(leadership: Leadership, log: Logger, boundMs: number): WhileLeading {
  return async (what, work) => {
    try {
      return await withRetry(work, {
        backoff: NATS_BACKOFF,
        untilMs: boundMs,
        retryable: (err) => isTransientNatsError(err) && leadership.holds(),
        onRetry: (err, attempt) => {
          if (attempt === 1) log.warn("NATS did not answer; retrying", { step: what, error: (err as Error).message });
        },
      });
    } catch (err) {
      if (isTransientNatsError(err) && !leadership.holds()) throw new StaleLeaderError(`lost the lease while trying to ${what}`);
      throw err;
    }
  };
}
