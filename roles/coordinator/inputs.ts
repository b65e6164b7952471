// What a dependent sub-task receives of its dependencies' results: the texts themselves while they fit
// one message with room to spare, else references (the worker reads each recorded result and checks it
// against the SHA-256 sent here, which the coordinator's signature covers).
import { type PlanTask, titleOf } from "../../lib/plan.ts";
import type { TaskInput, TaskResult } from "../../lib/task-messages.ts";
import { textDigest } from "../../lib/task-records.ts";

/** Inline inputs up to this much text; NATS' default max payload is 1 MiB, and the prompt comes too. */
export const MAX_INLINE_INPUT_BYTES = 256 * 1024;

export function taskInputs(deps: { task: PlanTask; result?: TaskResult }[]): TaskInput[] {
  const texts = deps.map((d) => d.result?.text ?? "");
  const total = texts.reduce((n, t) => n + Buffer.byteLength(t), 0);
  if (total <= MAX_INLINE_INPUT_BYTES) return deps.map((d, i) => ({ task: d.task.id, title: titleOf(d.task), result: texts[i] }));
  return deps.map((d, i) => ({ task: d.task.id, title: titleOf(d.task), digest: textDigest(texts[i]!) }));
}
