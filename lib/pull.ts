// Pulling from a JetStream pull consumer: whatever is waiting, up to a limit, in one round trip.
// nats.js v2's `fetch` leaves its reply subscription open whenever fewer messages than the batch come
// back (one leaked subscription per pull, see docs/decisions.md); this one always closes it.
import { createInbox, type JsMsg, type NatsConnection } from "nats";
import { toJsMsg } from "nats/lib/jetstream/jsmsg";
import { encode } from "./messages.ts";
import { consumerNextSubject } from "./subjects.ts";

export interface PullOptions {
  stream: string;
  durable: string;
  /** At most this many messages. */
  max: number;
  /**
   * 0: answer at once with what is there. More: if nothing is there yet, wait up to this long for the
   * first message (a message announced a moment ago may not be pullable yet).
   */
  waitMs: number;
  /** Give up on a server that does not answer (a consumer leader being elected, NATS away). */
  timeoutMs: number;
  /**
   * Called when the server says the consumer is not there: 409 "Consumer Deleted" (a waiting pull), or
   * 503 (nats-server 2.12+ answers a pull for a missing consumer so; 2.9 does not answer at all).
   */
  onGone?: () => void;
}

export function pullAvailable(nc: NatsConnection, o: PullOptions): Promise<JsMsg[]> {
  const got: JsMsg[] = [];
  // The connection's own inbox prefix (per-H-id permissions allow only that one).
  const inbox = createInbox((nc as NatsConnection & { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
  return new Promise((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = () => {
      clearTimeout(timer);
      if (!sub.isClosed()) sub.unsubscribe();
      resolve(got);
    };
    const sub = nc.subscribe(inbox, {
      callback: (err, m) => {
        // A status (404 no messages, 408 request over, 409 consumer gone) or an error ends the pull.
        const code = err ? 0 : (m.headers?.code ?? 0);
        if (code === 503 || (code === 409 && /consumer deleted/i.test(m.headers?.description ?? ""))) o.onGone?.();
        if (err || code !== 0) return finish();
        got.push(toJsMsg(m));
        if (got.length >= o.max || o.waitMs > 0) finish();
      },
    });
    timer = setTimeout(finish, o.timeoutMs + o.waitMs);
    // A waiting pull asks for one message: it exists for the brief race after an announcement.
    const request = o.waitMs > 0 ? { batch: 1, expires: o.waitMs * 1_000_000 } : { batch: o.max, no_wait: true };
    try {
      nc.publish(consumerNextSubject(o.stream, o.durable), encode(request), { reply: inbox });
    } catch {
      finish(); // connection closed
    }
  });
}
