// The tasks KV bucket: one record per request (its plan and, once answered, the answer) and one
// result per sub-task, created once so a repeated execution can never report twice.
import { createHash } from "node:crypto";
import type { KV } from "nats";
import { decode, encode } from "./messages.ts";
import type { Plan } from "./plan.ts";
import { NATS_BACKOFF, withRetry } from "./retry.ts";
import { taskKeys } from "./subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type PlanSummary, type RequestEventBody, type TaskResult, taskResultSchema } from "./task-messages.ts";

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
  /** The request's text, for a synthesis on another coordinator (Temporal mode). */
  text?: string;
  plan?: Plan;
  summary?: PlanSummary;
  /** The answer (or rejection) event, kept so a new leader can re-send it instead of redoing work. */
  answer?: RequestEventBody;
}

export async function readRequest(kv: KV, request: string): Promise<RequestRecord | undefined> {
  const e = await kv.get(taskKeys.request(request)).catch(() => null);
  if (e?.operation !== "PUT") return undefined;
  try {
    return JSON.parse(e.string()) as RequestRecord;
  } catch {
    return undefined;
  }
}

export async function writeRequest(kv: KV, request: string, record: RequestRecord): Promise<void> {
  await kv.put(taskKeys.request(request), encode(record));
}

export async function readResult(kv: KV, request: string, task: string): Promise<TaskResult | undefined> {
  const e = await kv.get(taskKeys.result(request, task)).catch(() => null);
  if (e?.operation !== "PUT") return undefined;
  const d = decode(taskResultSchema, e.value, MAX_PIPELINE_MESSAGE_BYTES);
  return d.ok ? d.value : undefined;
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

export async function attemptErrors(kv: KV, request: string, task: string): Promise<string[]> {
  const e = await kv.get(taskKeys.errors(request, task)).catch(() => null);
  if (e?.operation !== "PUT") return [];
  try {
    return JSON.parse(e.string()) as string[];
  } catch {
    return [];
  }
}

export async function appendAttemptError(kv: KV, request: string, task: string, error: string): Promise<void> {
  const errors = await attemptErrors(kv, request, task);
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
export async function countFailure(kv: KV, request: string): Promise<number> {
  const key = taskKeys.failures(request);
  for (let i = 0; i < 5; i++) {
    const e = await kv.get(key).catch(() => null);
    const n = e?.operation === "PUT" ? Number(e.string()) || 0 : 0;
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
export async function listDeadLetters(kv: KV): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  for await (const key of await kv.keys(taskKeys.deadAll)) {
    const e = await kv.get(key).catch(() => null);
    if (e?.operation !== "PUT") continue;
    try {
      out.push(JSON.parse(e.string()) as DeadLetter);
    } catch {
      // a record that is not ours: not listed
    }
  }
  return out.sort((a, b) => a.at - b.at);
}
