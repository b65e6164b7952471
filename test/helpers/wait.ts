// Bounded waits: every test waits for an event, never for a fixed time.

/** Polls `check` until it returns a truthy value; throws naming `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string | (() => string),
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
  stepMs = 25,
): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${typeof what === "string" ? what : what()} (last saw: ${String(last)})`);
    }
    await Bun.sleep(stepMs);
  }
}
