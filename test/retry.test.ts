// The one retry policy (lib/retry.ts): the delay curve is pure; withRetry is checked with real timers.

import { describe, expect, test } from "bun:test";
import { isTransientNatsError } from "../lib/nats-connection.ts";
import { backoffDelay, NATS_BACKOFF, TASK_BACKOFF, withRetry } from "../lib/retry.ts";

describe("backoffDelay", () => {
  test("doubles from the base, caps, and jitters by at most ±20 %", () => {
    const low = () => 0;
    const high = () => 0.999999;
    expect([1, 2, 3, 4].map((a) => backoffDelay(a, TASK_BACKOFF, undefined, low))).toEqual([800, 1600, 3200, 6400]);
    expect([1, 2, 3, 4].map((a) => backoffDelay(a, TASK_BACKOFF, undefined, high))).toEqual([1200, 2400, 4800, 9600]);
    expect(backoffDelay(20, TASK_BACKOFF, undefined, high)).toBe(36_000); // 30 s cap, +20 %
    expect(backoffDelay(20, NATS_BACKOFF, undefined, low)).toBe(3_200); // 4 s cap, -20 %
  });

  test("a provider's Retry-After wins, up to five minutes", () => {
    expect(backoffDelay(1, TASK_BACKOFF, 2_000)).toBe(2_000);
    expect(backoffDelay(1, TASK_BACKOFF, 0)).toBe(0);
    expect(backoffDelay(1, TASK_BACKOFF, 3_600_000)).toBe(300_000);
  });
});

describe("withRetry", () => {
  const fast = { baseMs: 1, capMs: 5 };

  test("retries until it succeeds, and says so before each wait", async () => {
    const seen: number[] = [];
    const value = await withRetry(
      async (attempt) => {
        if (attempt < 3) throw new Error(`fail ${attempt}`);
        return "ok";
      },
      { backoff: fast, attempts: 5, onRetry: (_e, attempt) => seen.push(attempt) },
    );
    expect(value).toBe("ok");
    expect(seen).toEqual([1, 2]);
  });

  test("gives up after the attempts with the last error", async () => {
    let calls = 0;
    const err = await withRetry(
      async () => {
        calls++;
        throw new Error(`fail ${calls}`);
      },
      { backoff: fast, attempts: 3 },
    ).catch((e: Error) => e);
    expect(calls).toBe(3);
    expect((err as Error).message).toBe("fail 3");
  });

  test("gives up once the time budget is spent, however many attempts are left", async () => {
    const started = Date.now();
    const err = await withRetry(
      async () => {
        throw new Error("down");
      },
      { backoff: { baseMs: 20, capMs: 20 }, untilMs: 150 },
    ).catch((e: Error) => e);
    expect((err as Error).message).toBe("down");
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  test("an error that is not retryable is thrown at once", async () => {
    let calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new Error("permanent");
        },
        { backoff: fast, attempts: 5, retryable: () => false },
      ),
    ).rejects.toThrow("permanent");
    expect(calls).toBe(1);
  });

  test("without attempts or a time budget it refuses to start", async () => {
    await expect(withRetry(async () => 1, { backoff: fast })).rejects.toThrow(RangeError);
  });
});

describe("isTransientNatsError: what start-up and clients try again", () => {
  const natsError = (code: string, message = code) => Object.assign(new Error(message), { code });
  test("time-outs, lost connections and JetStream's 503 (no leader yet) pass; permissions and bad requests do not", () => {
    for (const e of [natsError("TIMEOUT"), natsError("503"), natsError("DISCONNECT"), new Error("no responders available")])
      expect(isTransientNatsError(e)).toBe(true);
    for (const e of [
      natsError("PERMISSIONS_VIOLATION"),
      natsError("400", "wrong last sequence: 3"),
      new Error("stream name already in use"),
    ])
      expect(isTransientNatsError(e)).toBe(false);
  });
  test("our own wrappers keep the NATS error as their cause, and are judged by it", () => {
    expect(isTransientNatsError(new Error("cannot create JetStream stream X: 503", { cause: natsError("503") }))).toBe(true);
    expect(isTransientNatsError(new Error("cannot create JetStream stream X", { cause: natsError("PERMISSIONS_VIOLATION") }))).toBe(false);
  });
});
