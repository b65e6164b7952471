// Malformed inbound messages: dropped, counted per subject, logged at most every few seconds. Refused
// ones (well-formed, but unsigned, untrusted, replayed, or a KV record that fails its check) are counted
// the same way and, besides, by what was refused.
import type { JsMsg } from "nats";
import type { z } from "zod";
import type { Logger } from "./log.ts";
import { decode } from "./messages.ts";
import { MAX_PIPELINE_MESSAGE_BYTES } from "./task-messages.ts";

const MAX_SUBJECTS = 200;

/** What a refusal was about: a control request, a sub-task, a result, an answer, a KV record. */
export type RefusedKind = "control" | "subtask" | "result" | "answer" | "record";

export interface BadInputCounter {
  record(subject: string, reason: string): void;
  /** A well-formed message or record refused by a check (signature, trust, replay, schema of a KV record). */
  refuse(subject: string, kind: RefusedKind, reason: string): void;
  /** Refusals by kind, for heartbeats and /metrics. */
  refused(): Record<string, number>;
  /** Counts per subject, for the dashboard's --json. */
  counts(): Record<string, number>;
  total(): number;
}

export function createBadInputCounter(log: Logger, logEveryMs = 5_000): BadInputCounter {
  const bySubject = new Map<string, number>();
  const byKind = new Map<string, number>();
  let total = 0;
  const counter: BadInputCounter = {
    refuse(subject, kind, reason) {
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
      counter.record(subject, `refused: ${reason}`);
    },
    refused: () => Object.fromEntries(byKind),
    record(subject, reason) {
      total++;
      // Random subjects must not grow memory without bound.
      const key = bySubject.has(subject) || bySubject.size < MAX_SUBJECTS ? subject : "(other subjects)";
      bySubject.set(key, (bySubject.get(key) ?? 0) + 1);
      // Rate-limit per counted key, not per raw subject: random subjects must not flood the log either.
      log.warnLimited(`bad:${key}`, logEveryMs, "Dropped malformed message", {
        subject: subject.length > 200 ? `${subject.slice(0, 200)}...` : subject,
        reason,
      });
    },
    counts: () => Object.fromEntries(bySubject),
    total: () => total,
  };
  return counter;
}

/**
 * A work-queue message (request or sub-task) parsed with its schema; a malformed one is counted and
 * terminated so it is never redelivered, and undefined is returned. No reason goes with the TERM:
 * nats-server 2.9 ignores "+TERM <reason>" and would redeliver the message.
 */
export function acceptWorkItem<T>(msg: JsMsg, schema: z.ZodType<T>, bad: BadInputCounter): T | undefined {
  const d = decode(schema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
  if (d.ok) return d.value;
  bad.record(msg.subject, d.reason);
  msg.term();
  return undefined;
}
