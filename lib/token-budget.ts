// The swarm's LLM token budget (swarm.llm.tokens_per_minute), shared by every node through NATS: one
// KV key per time window holds the tokens charged to it. Before a call a node charges its estimate with
// compare-and-set (create, or update at the revision it read); when the window has no room it waits for
// the next one. After the call it charges the difference between the real usage and the estimate, so
// the window holds what was really used. Only nodes with the limit configured do any of this.
import type { KV, NatsConnection } from "nats";
import type { Logger } from "./log.ts";
import { backoffDelay, NATS_BACKOFF } from "./retry.ts";
import { type SwarmNames, tokenWindowKey } from "./subjects.ts";

export interface TokenBudgetOptions {
  nc: NatsConnection;
  names: SwarmNames;
  log: Logger;
  tokensPerMinute: number;
  /** Window length; the budget per window is tokensPerMinute × windowMs / 60 s. */
  windowMs: number;
  replicas: number;
  /** Wall clock (tests may shift it). */
  now?: () => number;
}

export interface TokenBudget {
  /** Tokens one window allows. */
  perWindow: number;
  /**
   * Waits until the current window has room for `estimate` tokens (a window that is still empty takes
   * any call, so an estimate above the whole budget still runs), charges it, and returns the function
   * that settles the call's real usage. Rejects only when `signal` aborts.
   */
  take(estimate: number, signal?: AbortSignal): Promise<(actual: number) => void>;
  /** Milliseconds spent waiting for room so far. */
  waitedMs(): number;
}

/** After this long without reaching the KV bucket a call goes ahead uncounted (NATS trouble must not stop work). */
const KV_GIVE_UP_MS = 5_000;

export function openTokenBudget(o: TokenBudgetOptions): TokenBudget {
  const now = o.now ?? Date.now;
  const perWindow = Math.max(1, Math.floor((o.tokensPerMinute * o.windowMs) / 60_000));
  let kv: Promise<KV> | undefined;
  let waited = 0;
  const bucket = () => {
    kv ??= o.nc
      .jetstream()
      .views.kv(o.names.buckets.tokens, { history: 1, ttl: Math.max(2 * o.windowMs, 60_000), replicas: o.replicas })
      .catch((err) => {
        kv = undefined;
        throw err;
      });
    return kv;
  };
  const encode = (n: number) => new TextEncoder().encode(String(Math.max(0, Math.round(n))));

  /** One compare-and-set: adds `tokens` to `window` when `fits(used)` holds; returns false on a lost race. */
  const casAdd = async (window: number, tokens: number, fits: (used: number) => boolean): Promise<"added" | "full" | "raced"> => {
    const b = await bucket();
    const key = tokenWindowKey(window);
    const e = await b.get(key);
    const used = e?.operation === "PUT" ? Number(e.string()) || 0 : 0;
    if (!fits(used)) return "full";
    try {
      if (e) await b.update(key, encode(used + tokens), e.revision);
      else await b.create(key, encode(tokens));
      return "added";
    } catch (err) {
      if (/wrong last sequence|key exists/i.test((err as Error)?.message ?? "")) return "raced";
      throw err;
    }
  };

  /** Retries NATS failures for a while, then gives up (the caller decides what that means). */
  const withKv = async <T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T | undefined> => {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (Date.now() - started > KV_GIVE_UP_MS) {
          o.log.warnLimited("token-budget", 30_000, `Token budget unreachable; ${what}`, { error: (err as Error)?.message });
          return undefined;
        }
        await sleep(backoffDelay(attempt, NATS_BACKOFF), signal);
      }
    }
  };

  const settle = (window: number, delta: number) => {
    if (delta === 0) return;
    void withKv("a call's real usage was not counted", async () => {
      for (let i = 0; i < 20; i++) if ((await casAdd(window, delta, () => true)) === "added") return;
    });
  };

  return {
    perWindow,
    waitedMs: () => waited,
    async take(estimate, signal) {
      const tokens = Math.max(1, Math.round(estimate));
      for (let moves = 0; ; ) {
        if (signal?.aborted) throw signal.reason;
        const window = Math.floor(now() / o.windowMs);
        const outcome = await withKv(
          "the call goes ahead uncounted",
          () => casAdd(window, tokens, (used) => used === 0 || used + tokens <= perWindow),
          signal,
        );
        if (outcome === undefined) return () => {};
        if (outcome === "added") {
          // Charging takes a round trip or two: when the window ended meanwhile, the call would start in
          // the next one uncounted there (under load, every node that started at a boundary at once).
          // The charge goes back and the window the call starts in is charged (a few times at most).
          if (Math.floor(now() / o.windowMs) !== window && moves++ < 3) {
            settle(window, -tokens);
            continue;
          }
          return (actual) => settle(window, Math.round(actual) - tokens);
        }
        if (outcome === "full") {
          // The next window starts for every node at the same time; a little jitter spreads their retries.
          const wait = (window + 1) * o.windowMs - now() + Math.floor(Math.random() * 25);
          o.log.debug("Waiting for the swarm's token budget", { window_tokens: perWindow, wait_ms: wait });
          const from = Date.now();
          await sleep(Math.max(1, wait), signal);
          waited += Date.now() - from;
        }
        // "raced": another node charged the window between our read and write; read again at once.
      }
    },
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", abort, { once: true });
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(timer);
      reject(signal?.reason);
    }
  });
}
