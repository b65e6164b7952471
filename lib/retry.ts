// How long to wait before a sub-task's next attempt. Pure, so it is tested without NATS.

const BASE_MS = 1_000;
const CAP_MS = 30_000;
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * Exponential backoff with ±20% jitter (1s, 2s, 4s, ... up to 30s); a provider's Retry-After wins
 * (capped at 5 minutes) because it knows its own rate limits.
 */
export function retryDelay(attempt: number, retryAfterMs?: number, random: () => number = Math.random): number {
  if (retryAfterMs !== undefined && retryAfterMs >= 0) return Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  const exp = Math.min(CAP_MS, BASE_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp * (0.8 + 0.4 * random()));
}
