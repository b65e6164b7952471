// What followers of a request see from the coordinator: progress events (stored by the EVENTS stream,
// nobody waits for them) and the answer, which is recorded, fenced and published exactly once.
import type { JetStreamClient, JsMsg, KV, NatsConnection } from "nats";
import { encode } from "../../lib/messages.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import type { RequestEventBody } from "../../lib/task-messages.ts";
import { type RequestRecord, writeRequest } from "../../lib/task-records.ts";
import { type Leadership, StaleLeaderError } from "./leadership.ts";
import type { WhileLeading } from "./while-leading.ts";

export interface RequestEvents {
  /** Progress for followers: the EVENTS stream stores it; nobody waits for that ack. */
  tell(request: string, ev: RequestEventBody): void;
  /** The answer: stored, deduplicated by its id. */
  publishAnswer(request: string, ev: RequestEventBody): Promise<unknown>;
}

export function requestEvents(nc: NatsConnection, js: JetStreamClient, names: SwarmNames, coordinator: string): RequestEvents {
  const event = (request: string, ev: RequestEventBody) => encode({ v: 1, request, at: Date.now(), coordinator, ...ev });
  return {
    tell(request, ev) {
      try {
        nc.publish(names.requestEvents(request), event(request, ev));
      } catch {
        // connection closed: followers learn from the answer
      }
    },
    publishAnswer: (request, ev) => js.publish(names.requestEvents(request), event(request, ev), { msgID: `${request}.answer` }),
  };
}

/**
 * Record the answer, make sure we still lead, publish it once (deduplicated by id), then ack the
 * request. Recorded first: a leader that loses NATS after synthesizing resends the recorded answer
 * instead of synthesizing again.
 */
export async function answerRequest(
  o: { kv: KV; leadership: Leadership; events: RequestEvents; whileLeading: WhileLeading },
  msg: JsMsg,
  request: string,
  base: RequestRecord,
  answer: RequestEventBody,
): Promise<void> {
  o.leadership.fence();
  // Record and lease check together; both must succeed before the answer goes out.
  const [, leading] = await Promise.all([
    o.whileLeading("record the answer", () =>
      writeRequest(o.kv, request, { ...base, status: "answered", lease: o.leadership.revision(), answer }),
    ),
    o.leadership.confirm(),
  ]);
  if (!leading) throw new StaleLeaderError("lease lost before answering");
  await o.whileLeading("publish the answer", () => o.events.publishAnswer(request, answer));
  msg.ack();
}
