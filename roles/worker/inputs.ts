// A sub-task's inputs as the LLM sees them: inline texts as sent, references read from the recorded
// results and checked against the digest the (signed) sub-task carries.
import type { KV } from "nats";
import type { RecordGuard } from "../../lib/record-guard.ts";
import type { TaskMsg } from "../../lib/task-messages.ts";
import { readResult, textDigest } from "../../lib/task-records.ts";

export interface ResolvedInput {
  task: string;
  title: string;
  result: string;
}

/** Throws when a referenced result is missing or does not match its digest (the sub-task then fails). */
export async function resolveInputs(kv: KV, task: TaskMsg, records?: RecordGuard): Promise<ResolvedInput[]> {
  return Promise.all(
    task.inputs.map(async (i) => {
      if (i.result !== undefined) return { task: i.task, title: i.title, result: i.result };
      const recorded = await readResult(kv, task.request, i.task, records);
      const text = recorded?.text ?? "";
      if (!recorded || textDigest(text) !== i.digest) {
        throw new Error(`input ${i.task}: the recorded result ${recorded ? "does not match its digest" : "is missing"}`);
      }
      return { task: i.task, title: i.title, result: text };
    }),
  );
}
