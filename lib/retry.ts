// The one retry policy: exponential backoff with ±20 % jitter, capped, for anything worth trying again
// (a sub-task's next attempt, a KV write while JetStream recovers, a client's publish during an outage).
// `backoffDelay` is pure, so it is tested without NATS.

export interface Backoff {
  /** Delay before the second attempt. */
  baseMs: number;
  /** No delay grows past this. */
  capMs: number;
}

/** A sub-task's next attempt: 1 s, 2 s, 4 s, ... up to 30 s (LLM providers need time to recover). */
export const TASK_BACKOFF: Backoff = { baseMs: 1_000, capMs: 30_000 };
/** Talking to NATS while it recovers (a restart, a leader election): 250 ms, 500 ms, ... up to 4 s. */
export const NATS_BACKOFF: Backoff = { baseMs: 250, capMs: 4_000 };

/** A provider's Retry-After is honoured up to this (it knows its own rate limits). */
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * How long to wait after failed attempt `attempt` (1-based): base × 2^(attempt-1), capped, ±20 %.
 * `retryAfterMs` (a provider's Retry-After) wins when given.
 */
export function backoffDelay(attempt: number, policy: Backoff, retryAfterMs?: number, random: () => number = Math.random): number {
  if (retryAfterMs !== undefined && retryAfterMs >= 0) return Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  const exp = Math.min(policy.capMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp * (0.8 + 0.4 * random()));
}

export interface RetryOptions {
  backoff: Backoff;
  /** Give up after this many attempts (default: unbounded, then `untilMs` must be set). */
  attempts?: number;
  /** Give up once this much time has passed since the first attempt. */
  untilMs?: number;
  /** False: the error is final, thrown at once. Default: every error is worth another try. */
  retryable?: (err: unknown) => boolean;
  /** Called before each wait, e.g. to log "will retry". */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
}

/** Runs `fn` until it succeeds, the attempts or the time are used up (the last error is thrown), or it fails for good. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  if (o.attempts === undefined && o.untilMs === undefined) throw new RangeError("withRetry needs attempts or untilMs");
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (o.retryable && !o.retryable(err)) throw err;
      if (o.attempts !== undefined && attempt >= o.attempts) throw err;
      let delay = backoffDelay(attempt, o.backoff);
      if (o.untilMs !== undefined) {
        const left = started + o.untilMs - Date.now();
        if (left <= 0) throw err;
        delay = Math.min(delay, left);
      }
      if (o.signal?.aborted) throw err;
      o.onRetry?.(err, attempt, delay);
      await sleep(delay, o.signal);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
