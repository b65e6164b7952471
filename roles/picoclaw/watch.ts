// `picoclaw watch <request-id>`: re-attach to a request. Prints its stored answer at once, or follows
// its events from the EVENTS stream until the answer comes (a submit that lost its terminal, a gateway
// client that went away, a request submitted elsewhere). An id the swarm has never stored (nothing
// queued, no event kept) is said at once, with its own exit status, instead of waiting for nothing.

import { EXIT } from "../../lib/cli.ts";
import type { Config } from "../../lib/config.ts";
import { formatDuration } from "../../lib/duration.ts";
import { validateId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { isTransientNatsError } from "../../lib/nats-connection.ts";
import { NATS_BACKOFF, withRetry } from "../../lib/retry.ts";
import { trustedAnswerKeys } from "../../lib/signing.ts";
import { openClient } from "./client.ts";
import { followWithProgress } from "./progress.ts";
import { lookupRequest } from "./requests.ts";
import { report } from "./submit.ts";

export async function runWatch(cfg: Config, log: Logger, request: string, json: boolean, timeoutMs?: number): Promise<number> {
  validateId("request id", request);
  const trusted = trustedAnswerKeys(cfg);
  const client = await openClient(cfg, log, "picoclaw-watch");
  const waitMs = timeoutMs ?? cfg.swarm.tasks.request_timeout;
  try {
    const known = await withRetry(() => lookupRequest(client.link.nc, client.names, request), {
      backoff: NATS_BACKOFF,
      untilMs: waitMs,
      retryable: isTransientNatsError,
    });
    const hid = client.identity.hid;
    if (known.state === "unknown") {
      process.stderr.write(
        `picoclaw: swarm ${hid} has no request ${request}: it is not queued and no event of it is kept ` +
          `(requests are kept for swarm.tasks.retention, ${formatDuration(cfg.swarm.tasks.retention)}); ` +
          "check the id, and --swarm.hid if it was sent to another swarm\n",
      );
      return EXIT.unknownRequest;
    }
    if (known.state === "unsure") {
      process.stderr.write(
        `picoclaw: no event of request ${request} in swarm ${hid} yet, and the requests waiting for a coordinator ` +
          `could not be read to look for it (${known.reason}); waiting up to ${formatDuration(waitMs)} in case it is one of them\n`,
      );
    }
    const progress = await withRetry(() => followWithProgress(client.link.nc, client.names, request, json, trusted), {
      backoff: NATS_BACKOFF,
      untilMs: waitMs,
      retryable: isTransientNatsError,
    });
    try {
      return report(request, await progress.outcome(waitMs), json, waitMs);
    } finally {
      await progress.stop();
    }
  } finally {
    await client.close();
  }
}
