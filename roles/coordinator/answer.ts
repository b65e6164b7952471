// What followers of a request see from the coordinator: progress events (stored by the EVENTS stream,
// nobody waits for them) and the answer, which is recorded, fenced and published exactly once.
import type { JetStreamClient, JsMsg, KV, NatsConnection } from "nats";
import type { BadInputCounter } from "../../lib/bad-input.ts";
import type { Config } from "../../lib/config.ts";
import { encode } from "../../lib/messages.ts";
import { createRecordGuard, type RecordGuard } from "../../lib/record-guard.ts";
import { type Signer, signMessage } from "../../lib/signing.ts";
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

/** With `signer` (signing on) the answer and its streamed pieces carry the coordinator's signature; clients check it. */
export function requestEvents(
  nc: NatsConnection,
  js: JetStreamClient,
  names: SwarmNames,
  coordinator: string,
  signer?: Signer,
): RequestEvents {
  const event = (request: string, ev: RequestEventBody) => encode({ v: 1, request, at: Date.now(), coordinator, ...ev });
  return {
    tell(request, ev) {
      try {
        const subject = names.requestEvents(request);
        const payload = event(request, ev);
        // The answer's pieces are signed like the answer: a gateway streams only what it can verify.
        const headers = signer && ev.kind === "answer_delta" ? signMessage(signer, subject, payload) : undefined;
        nc.publish(subject, payload, { headers });
      } catch {
        // connection closed: followers learn from the answer
      }
    },
    publishAnswer(request, ev) {
      const subject = names.requestEvents(request);
      const payload = event(request, ev);
      return js.publish(subject, payload, {
        msgID: `${request}.answer`,
        headers: signer ? signMessage(signer, subject, payload) : undefined,
      });
    },
  };
}

/**
 * How this coordinator checks records it reads back from KV: every one with its schema; with signing on,
 * request records are sealed with its key when written and accepted only from its own key or those of
 * trusted_coordinators (its peers) when read, so it never re-signs a plan it did not make.
 */
export function coordinatorRecords(node: { names: SwarmNames; bad: BadInputCounter; config: Config }, signer?: Signer): RecordGuard {
  const trusted = signer ? new Set([signer.publicKey, ...node.config.swarm.security.trusted_coordinators]) : undefined;
  return createRecordGuard({ bucket: node.names.buckets.tasks, bad: node.bad, signer, trusted });
}

/**
 * Record the answer, make sure we still lead, publish it once (deduplicated by id), then ack the
 * request. Recorded first: a leader that loses NATS after synthesizing resends the recorded answer
 * instead of synthesizing again.
 */
export async function answerRequest(
  o: { kv: KV; leadership: Leadership; events: RequestEvents; whileLeading: WhileLeading; records?: RecordGuard },
  msg: JsMsg,
  request: string,
  base: RequestRecord,
  answer: RequestEventBody,
): Promise<void> {
  o.leadership.fence();
  // Record and lease check together; both must succeed before the answer goes out.
  const [, leading] = await Promise.all([
    o.whileLeading("record the answer", () =>
      writeRequest(o.kv, request, { ...base, status: "answered", lease: o.leadership.revision(), answer }, o.records),
    ),
    o.leadership.confirm(),
  ]);
  if (!leading) throw new StaleLeaderError("lease lost before answering");
  await o.whileLeading("publish the answer", () => o.events.publishAnswer(request, answer));
  msg.ack();
}
