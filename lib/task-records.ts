// The tasks KV bucket: one record per request (its plan and, once answered, the answer) and one
// result per sub-task, created once so a repeated execution can never report twice.
import { createHash } from "node:crypto";
import type { KV } from "nats";
import { decode, encode } from "./messages.ts";
import type { Plan } from "./plan.ts";
import { plainRecords, type RecordGuard, type RecordRead } from "./record-guard.ts";
import { NATS_BACKOFF, withRetry } from "./retry.ts";
import { taskKeys } from "./subjects.ts";
import {
  attemptErrorsSchema,
  deadLetterSchema,
  failureCountSchema,
  MAX_PIPELINE_MESSAGE_BYTES,
  type PlanSummary,
  type RequestEventBody,
  requestRecordSchema,
  type TaskResult,
  taskResultSchema,
} from "./task-messages.ts";

export interface RequestRecord {
  v: 1;
  status: "running" | "answered";
  coordinator: string;
  /** Lease revision of the coordinator that wrote it (fencing, and for the record). */
  lease: number;
  started_at: number;
  /** Epoch ms by which the request ends (answered, or failed naming what was unfinished). */
  deadline_at?: number;
  /** Stream sequence of each sub-task queued so far: a resume re-queues only what is gone from the stream. */
  queued?: Record<string, number>;
  /** Sub-tasks sent again after a decision: the parking (EVENTS sequence) each one answered. */
  resumed?: Record<string, number>;
  /** The request's text, for a synthesis on another coordinator (Temporal mode). */
  text?: string;
  plan?: Plan;
  summary?: PlanSummary;
  /** The answer (or rejection) event, kept so a new leader can re-send it instead of redoing work. */
  answer?: RequestEventBody;
}

/** A bad record (schema, or seal with signing on) reads as absent: the request is planned afresh and the record replaced. */
export async function readRequest(kv: KV, request: string, guard: RecordGuard = plainRecords): Promise<RequestRecord | undefined> {
  const key = taskKeys.request(request);
  const r = guard.read(key, await kv.get(key).catch(() => null), requestRecordSchema, { sealed: true });
  return r.state === "ok" ? (r.value as RequestRecord) : undefined;
}

export async function writeRequest(kv: KV, request: string, record: RequestRecord, guard: RecordGuard = plainRecords): Promise<void> {
  const key = taskKeys.request(request);
  await kv.put(key, encode(guard.seal(key, record)));
}

export async function readResult(
  kv: KV,
  request: string,
  task: string,
  guard: RecordGuard = plainRecords,
): Promise<TaskResult | undefined> {
  // Not readable now (NATS away) reads as "no result yet": these callers look again later.
  const r = await readResultRecord(kv, request, task, guard).catch(() => undefined);
  return r?.state === "ok" ? r.value : undefined;
}

/**
 * The result record, or why it is bad (the coordinator fails such a sub-task visibly instead of waiting
 * for ever). Throws when KV cannot be read: "absent" is said only when the server says so.
 */
export async function readResultRecord(kv: KV, request: string, task: string, guard: RecordGuard): Promise<RecordRead<TaskResult>> {
  const key = taskKeys.result(request, task);
  return guard.read(key, await kv.get(key), taskResultSchema, { kind: "result" });
}

/**
 * First result wins: false when one was already recorded (at-least-once delivery). Any other failure
 * (NATS down, JetStream not ready after a restart) is retried for a while and then thrown, so a
 * result is never mistaken for a duplicate and silently dropped.
 */
export function recordResultOnce(kv: KV, result: TaskResult, attempts = 8): Promise<boolean> {
  const key = taskKeys.result(result.request, result.task);
  return withRetry(
    async () => {
      try {
        await kv.create(key, encode(result));
        return true;
      } catch (err) {
        const existing = await kv.get(key).catch(() => undefined);
        if (existing?.operation !== "PUT") throw err;
        // Our own earlier attempt may have been stored although its reply timed out.
        const mine = decode(taskResultSchema, existing.value, MAX_PIPELINE_MESSAGE_BYTES);
        return mine.ok && mine.value.node === result.node && mine.value.started_at === result.started_at;
      }
    },
    { backoff: NATS_BACKOFF, attempts },
  ).catch((err) => {
    throw new Error(`cannot record the result of ${result.request}/${result.task}: ${(err as Error)?.message ?? err}`, { cause: err });
  });
}

/** A bad list reads as empty (and is replaced by the next append). */
export async function attemptErrors(kv: KV, request: string, task: string, guard: RecordGuard = plainRecords): Promise<string[]> {
  const key = taskKeys.errors(request, task);
  const r = guard.read(key, await kv.get(key).catch(() => null), attemptErrorsSchema);
  return r.state === "ok" ? r.value : [];
}

export async function appendAttemptError(kv: KV, request: string, task: string, error: string, guard?: RecordGuard): Promise<void> {
  const errors = await attemptErrors(kv, request, task, guard);
  errors.push(error.slice(0, 1000));
  await kv.put(taskKeys.errors(request, task), encode(errors.slice(-20))).catch(() => {});
}

/** SHA-256 of a result's text: how a sub-task given its inputs by reference checks what it reads. */
export function textDigest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** A request given up after `failures` failed attempts to handle it. */
export interface DeadLetter {
  v: 1;
  request: string;
  /** The start of the request's text. */
  text: string;
  error: string;
  failures: number;
  at: number;
  coordinator: string;
}

/** One more failed attempt to handle `request`; returns how many there have been. */
export async function countFailure(kv: KV, request: string, guard: RecordGuard = plainRecords): Promise<number> {
  const key = taskKeys.failures(request);
  for (let i = 0; i < 5; i++) {
    const e = await kv.get(key).catch(() => null);
    const r = guard.read(key, e, failureCountSchema);
    const n = r.state === "ok" ? r.value : 0; // a bad count starts again (and is replaced below)
    try {
      if (e?.operation === "PUT") await kv.update(key, encode(n + 1), e.revision);
      else await kv.create(key, encode(n + 1));
      return n + 1;
    } catch {
      // another coordinator counted at the same moment: read again
    }
  }
  throw new Error(`cannot count the failures of request ${request}`);
}

export async function writeDeadLetter(kv: KV, letter: DeadLetter): Promise<void> {
  await kv.put(taskKeys.dead(letter.request), encode(letter));
}

/** Every dead letter still kept (they expire with the bucket's retention), oldest first. */
export async function listDeadLetters(
  kv: KV,
  guard: RecordGuard = plainRecords,
): Promise<{ letters: DeadLetter[]; unreadable: { key: string; reason: string }[] }> {
  const letters: DeadLetter[] = [];
  const unreadable: { key: string; reason: string }[] = [];
  // Keys first, then the records: awaiting a read inside nats.js's keys() iteration ends it after the
  // first key (seen on 2.9 and 2.15), which listed one dead letter however many there were.
  const keys: string[] = [];
  for await (const key of await kv.keys(taskKeys.deadAll)) keys.push(key);
  for (const key of keys) {
    const r = guard.read(key, await kv.get(key).catch(() => null), deadLetterSchema);
    if (r.state === "ok") letters.push(r.value);
    else if (r.state === "bad") unreadable.push({ key, reason: r.reason }); // reported, never listed as a letter
  }
  return { letters: letters.sort((a, b) => a.at - b.at), unreadable };
}
