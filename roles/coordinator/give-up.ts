// Sub-tasks the coordinator gives up on: their capability has no online node, or their deliveries are
// used up without any node recording an outcome (each node running it stopped or crashed). The leader
// records the failure itself (first outcome wins, as for nodes) and tells followers. JetStream's
// max-deliveries advisory is the fast path; the request run's reconcile finds the same from stored state.
import type { JetStreamClient, JetStreamManager, KV, NatsConnection, Subscription } from "nats";
import { z } from "zod";
import type { BadInputCounter } from "../../lib/bad-input.ts";
import type { Logger } from "../../lib/log.ts";
import { decode, encode } from "../../lib/messages.ts";
import type { RecordGuard } from "../../lib/record-guard.ts";
import { type Signer, signResult } from "../../lib/signing.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type TaskResult, taskSchema } from "../../lib/task-messages.ts";
import { attemptErrors, recordResultOnce } from "../../lib/task-records.ts";

export interface GiveUpOptions {
  js: JetStreamClient;
  kv: KV;
  names: SwarmNames;
  node: string;
  signer?: Signer;
  /** How records read back from KV are checked and reported. */
  records?: RecordGuard;
}

/** Records `error` as the sub-task's outcome and publishes its `failed` event; undefined when an outcome was already recorded. */
export async function recordFailure(
  o: GiveUpOptions,
  task: { request: string; task: string; capability: string },
  error: string,
  attempts: number,
): Promise<TaskResult | undefined> {
  const now = Date.now();
  const unsigned: TaskResult = {
    v: 1,
    request: task.request,
    task: task.task,
    status: "failed",
    node: o.node,
    capability: task.capability,
    error,
    errors: await attemptErrors(o.kv, task.request, task.task, o.records),
    attempts: Math.max(1, attempts),
    started_at: now,
    finished_at: now,
    usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
    llm: "none",
    truncated: false,
  };
  const result = o.signer ? signResult(o.signer, unsigned) : unsigned;
  if (!(await recordResultOnce(o.kv, result))) return undefined;
  const event = { v: 1, request: task.request, task: task.task, kind: "failed", node: o.node, capability: task.capability };
  await o.js.publish(o.names.taskEvents(task.request, task.task), encode({ ...event, at: now, attempt: result.attempts, error, result }));
  return result;
}

/** The part of JetStream's max-deliveries advisory we use. */
const maxDeliveriesAdvisorySchema = z.object({ stream_seq: z.number().int().positive() });

/** Follows JetStream's max-deliveries advisories for the TASKS stream and fails each such sub-task (leader only). */
export function failExhaustedSubTasks(
  o: GiveUpOptions & {
    nc: NatsConnection;
    jsm: JetStreamManager;
    maxDeliver: number;
    log: Logger;
    bad: BadInputCounter;
    leading(): boolean;
  },
): Subscription {
  return o.nc.subscribe(o.names.maxDeliveriesAdvisory, {
    callback: (_e, msg) => {
      // Anyone on the bus can publish here: count what is not an advisory, like any other bad input.
      const d = decode(maxDeliveriesAdvisorySchema, msg.data);
      if (!d.ok) return o.bad.record(msg.subject, d.reason);
      if (!o.leading()) return;
      (async () => {
        const seq = d.value.stream_seq;
        const stored = await o.jsm.streams.getMessage(o.names.streams.tasks, { seq });
        const t = decode(taskSchema, stored.data, MAX_PIPELINE_MESSAGE_BYTES);
        if (t.ok) {
          const error = `gave up after ${o.maxDeliver} attempts without a result (the node running it stopped or crashed each time)`;
          const recorded = await recordFailure(o, t.value, error, o.maxDeliver);
          if (recorded) o.log.warn("Task failed", { task: t.value.task, request: t.value.request, attempts: recorded.attempts, error });
        }
        await o.jsm.streams.deleteMessage(o.names.streams.tasks, seq).catch(() => {});
      })().catch((err) => o.log.debug("Max-deliveries advisory not handled", { error: (err as Error).message }));
    },
  });
}

/**
 * A result the coordinator does not believe (bad or untrusted signature): failed, saying why, and none
 * of its figures (text, tokens, model, tool calls) counted, since they are exactly what may be forged.
 */
export function rejectedResult(r: TaskResult, reason: string): TaskResult {
  return {
    ...r,
    status: "failed",
    text: undefined,
    error: `result rejected: ${reason}`,
    usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
    model: undefined,
    tool_calls: undefined,
  };
}
