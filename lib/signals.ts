// Stopping on SIGINT/SIGTERM: the first one starts a clean leave, a second one exits at once.
import type { Logger } from "./log.ts";

/** Resolves on the first SIGINT/SIGTERM; a second one exits at once. */
export function untilStopSignal(log: Logger): Promise<string> {
  return new Promise((resolve) => {
    let count = 0;
    const handler = (sig: NodeJS.Signals) => {
      count++;
      if (count > 1) {
        log.warn("Second signal: exiting without a clean leave", { signal: sig });
        process.exit(130);
      }
      log.info("Stopping", { signal: sig });
      resolve(sig);
    };
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  });
}

/** What the online nodes can do: workers also take `general`; coordinators run no sub-tasks. */
