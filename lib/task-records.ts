// The tasks KV bucket: one record per request (its plan and, once answered, the answer) and one
// result per sub-task, created once so a repeated execution can never report twice.
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
