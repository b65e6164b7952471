// Sending a request to the swarm: store it in the REQUESTS work queue, retrying through a NATS outage
// until JetStream has it. The request id is the dedupe id, so storing again after a lost reply cannot
// queue it twice. `submit` and the gateway both send requests this way.
import type { NatsConnection } from "nats";
import { formatDuration } from "./duration.ts";
import { PicoclawError } from "./errors.ts";
import { encode } from "./messages.ts";
import { isTransientNatsError } from "./nats-connection.ts";
import { NATS_BACKOFF, withRetry } from "./retry.ts";
import type { SwarmNames } from "./subjects.ts";
import type { RequestMsg } from "./task-messages.ts";

export interface StoreOptions {
  /** Give up (E_NATS) once this much time has passed. */
  untilMs: number;
  /** Called before each wait after a failed attempt (e.g. to say "trying again" once). */
  onRetry?: (err: unknown, attempt: number) => void;
  signal?: AbortSignal;
}

export async function storeRequest(nc: NatsConnection, names: SwarmNames, msg: RequestMsg, o: StoreOptions): Promise<void> {
  const js = nc.jetstream();
  await withRetry(() => js.publish(names.requestSubmit, encode(msg), { msgID: msg.request, timeout: 5_000 }), {
    backoff: NATS_BACKOFF,
    untilMs: o.untilMs,
    retryable: isTransientNatsError,
    onRetry: o.onRetry,
    signal: o.signal,
  }).catch((err) => {
    throw new PicoclawError(
      "E_NATS",
      `request ${msg.request} could not be stored in JetStream within ${formatDuration(o.untilMs)}: ${(err as Error).message}`,
      { cause: err },
    );
  });
}
