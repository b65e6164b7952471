// Taking requests: while this coordinator leads and has a free slot, it keeps one waiting pull open on
// the REQUESTS work queue; the server hands a request over the moment it is stored.
import type { JsMsg, NatsConnection } from "nats";
import { createDoorbell } from "../../lib/doorbell.ts";
import { pullAvailable } from "../../lib/pull.ts";
import type { SwarmNames } from "../../lib/subjects.ts";

export interface IntakeOptions {
  nc: NatsConnection;
  names: SwarmNames;
  maxConcurrent: number;
  leading(): boolean;
  /** Requests being handled now. */
  active(): number;
  /** Handles one request to its end (ack or nak); never rejects. */
  handle(msg: JsMsg): void;
}

export interface Intake {
  /** Something changed (leadership won, a slot freed): look again now. */
  wake(): void;
  /** Stops taking requests; resolves when the loop has ended. */
  stop(): Promise<void>;
}

const IDLE_POLL_MS = 1_000;
/** How long one waiting pull for requests stays open (also how long a stop waits for it at most). */
const REQUEST_WAIT_MS = 250;

export function takeRequests(o: IntakeOptions): Intake {
  const bell = createDoorbell();
  let stopping = false;
  const take = (msgs: JsMsg[]) => {
    for (const msg of msgs) {
      if (stopping || !o.leading())
        msg.nak(); // the next leader (or this one, later) takes it at once
      else o.handle(msg);
    }
  };
  const loop = (async () => {
    const from = { stream: o.names.streams.requests, durable: o.names.consumers.requests, timeoutMs: 1_000 };
    while (!stopping) {
      if (!o.leading() || o.active() >= o.maxConcurrent) {
        await bell.wait(IDLE_POLL_MS);
        continue;
      }
      // A waiting pull: no doorbell and no second round trip; then whatever else is waiting, up to the
      // free slots, in one more pull. Each is handled as soon as it is here (a no-wait pull may go
      // unanswered on nats-server 2.9).
      const first = await pullAvailable(o.nc, { ...from, max: 1, waitMs: REQUEST_WAIT_MS });
      take(first);
      const free = o.maxConcurrent - o.active();
      if (first.length > 0 && first[0]!.info.pending > 0 && free > 0) take(await pullAvailable(o.nc, { ...from, max: free, waitMs: 0 }));
    }
  })();
  return {
    wake: () => bell.ring(),
    async stop() {
      stopping = true;
      bell.ring();
      await loop;
    },
  };
}
