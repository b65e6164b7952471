// A sub-task's agent steps: each finished model turn and each tool result, stored once in the tasks
// bucket under `step.<request>.<task>.<n>`, so the next attempt (on any worker) resumes from the last
// one instead of running finished tool calls again. One KV create per step, created once: a second
// writer of the same step learns someone else is running the sub-task.
import type { KV } from "nats";
import { z } from "zod";
import { encode } from "./messages.ts";
import { plainRecords, type RecordGuard } from "./record-guard.ts";
import { taskKeys } from "./subjects.ts";
import { approvalNoteSchema } from "./task-messages.ts";

const toolCall = z.object({ id: z.string().max(200), name: z.string().max(200), arguments: z.string().max(256 * 1024) });
const usage = z.object({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  total_tokens: z.number().int().nonnegative(),
});

/** A model turn that asked for tools (a turn without calls ends the loop and becomes the result). */
export const turnStepSchema = z.object({
  v: z.literal(1),
  kind: z.literal("turn"),
  n: z.number().int().positive(),
  node: z.string().max(64),
  at: z.number().int().nonnegative(),
  content: z.string().max(512 * 1024),
  calls: z.array(toolCall).max(64),
  usage,
  /**
   * The calls' results, when every call was replay-safe: then the turn is recorded once, after its calls
   * ran (one write), since running them again after a crash is harmless.
   */
  results: z
    .array(z.lazy(() => toolStepSchema))
    .max(64)
    .optional(),
});

/** A tool call's result as the model saw it. `outcome` "interrupted": its worker died mid-call. */
export const toolStepSchema = z.object({
  v: z.literal(1),
  kind: z.literal("tool"),
  n: z.number().int().positive(),
  node: z.string().max(64),
  at: z.number().int().nonnegative(),
  call_id: z.string().max(200),
  tool: z.string().max(200),
  content: z.string().max(1024 * 1024),
  is_error: z.boolean(),
  outcome: z.string().max(40),
  duration_ms: z.number().int().nonnegative(),
  /** The call needed approval: how it was decided. */
  approval: approvalNoteSchema.optional(),
});

export const stepSchema = z.discriminatedUnion("kind", [turnStepSchema, toolStepSchema]);
export type TurnStep = z.infer<typeof turnStepSchema>;
export type ToolStep = z.infer<typeof toolStepSchema>;
export type Step = TurnStep | ToolStep;

/** The steps recorded so far: each turn with the results of its calls that were recorded. */
export interface RecordedTurn {
  turn: TurnStep;
  results: Map<string, ToolStep>;
}

/**
 * Reads the recorded steps in order. A turn at step n has its calls' results at n+1 .. n+k (some may
 * be missing: its worker died mid-call) and the next turn at n+k+1, or, recorded with its results,
 * the next turn at n+1. Reading stops at the first missing turn. Throws when KV cannot be read (the
 * attempt goes back to its queue).
 */
export async function readSteps(kv: KV, request: string, task: string, guard: RecordGuard = plainRecords): Promise<RecordedTurn[]> {
  const out: RecordedTurn[] = [];
  for (let n = 1; out.length < 10_000; ) {
    const turn = await readStep(kv, request, task, n, guard);
    if (turn?.kind !== "turn") break;
    const results = new Map<string, ToolStep>();
    if (turn.results) {
      for (const r of turn.results) results.set(r.call_id, r);
      out.push({ turn, results });
      n += 1;
      continue;
    }
    const reads = turn.calls.map((_, i) => readStep(kv, request, task, n + 1 + i, guard));
    for (const r of await Promise.all(reads)) if (r?.kind === "tool") results.set(r.call_id, r);
    out.push({ turn, results });
    n += 1 + turn.calls.length;
  }
  return out;
}

async function readStep(kv: KV, request: string, task: string, n: number, guard: RecordGuard): Promise<Step | undefined> {
  const key = taskKeys.step(request, task, n);
  const r = guard.read(key, await kv.get(key), stepSchema, { kind: "record" });
  return r.state === "ok" ? r.value : undefined;
}

/** Thrown when a step was already recorded by another run of the same sub-task. */
export class StepTakenError extends Error {
  override name = "StepTakenError";
}

/** Records one step, once. One stored write. */
export async function recordStep(kv: KV, request: string, task: string, step: Step, guard: RecordGuard = plainRecords): Promise<void> {
  const key = taskKeys.step(request, task, step.n);
  try {
    await kv.create(key, encode(guard.seal(key, step)));
  } catch (err) {
    const existing = await kv.get(key).catch(() => undefined);
    if (existing?.operation === "PUT") throw new StepTakenError(`step ${step.n} of ${request}/${task} was recorded by another run`);
    throw err;
  }
}
