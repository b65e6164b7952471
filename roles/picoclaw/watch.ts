// `picoclaw watch <request-id>`: re-attach to a request. Prints its stored answer at once, or follows
// its events from the EVENTS stream until the answer comes (a submit that lost its terminal, a gateway
// client that went away, a request submitted elsewhere).

import type { Config } from "../../lib/config.ts";
import { validateId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { isTransientNatsError } from "../../lib/nats-connection.ts";
import { NATS_BACKOFF, withRetry } from "../../lib/retry.ts";
import { trustedAnswerKeys } from "../../lib/signing.ts";
import { openClient } from "./client.ts";
import { followWithProgress } from "./progress.ts";
import { report } from "./submit.ts";

export async function runWatch(cfg: Config, log: Logger, request: string, json: boolean, timeoutMs?: number): Promise<number> {
  validateId("request id", request);
  const trusted = trustedAnswerKeys(cfg);
  const client = await openClient(cfg, log, "picoclaw-watch");
  const waitMs = timeoutMs ?? cfg.swarm.tasks.request_timeout;
  const progress = await withRetry(() => followWithProgress(client.link.nc, client.names, request, json, trusted), {
    backoff: NATS_BACKOFF,
    untilMs: waitMs,
    retryable: isTransientNatsError,
  });
  try {
    return report(request, await progress.outcome(waitMs), json, waitMs);
  } finally {
    await progress.stop();
    await client.close();
  }
}
