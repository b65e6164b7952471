// A sub-task that used up its deliveries without any node recording an outcome (each node running it
// stopped or crashed): JetStream says so in a max-deliveries advisory, and the leader records it failed.
import type { JetStreamClient, JetStreamManager, KV, NatsConnection, Subscription } from "nats";
import { z } from "zod";
import type { BadInputCounter } from "../../lib/bad-input.ts";
import type { Logger } from "../../lib/log.ts";
import { decode, encode } from "../../lib/messages.ts";
import { type Signer, signResult } from "../../lib/signing.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type TaskResult, taskSchema } from "../../lib/task-messages.ts";
import { attemptErrors, readResult, recordResultOnce } from "../../lib/task-records.ts";

/** The part of JetStream's max-deliveries advisory we use. */
const maxDeliveriesAdvisorySchema = z.object({ stream_seq: z.number().int().positive() });

export interface ExhaustedOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  kv: KV;
  names: SwarmNames;
  node: string;
  maxDeliver: number;
  log: Logger;
  bad: BadInputCounter;
  signer?: Signer;
  leading(): boolean;
}

export function failExhaustedSubTasks(o: ExhaustedOptions): Subscription {
  return o.nc.subscribe(o.names.maxDeliveriesAdvisory, {
    callback: (_e, msg) => {
      // Anyone on the bus can publish here: count what is not an advisory, like any other bad input.
      const d = decode(maxDeliveriesAdvisorySchema, msg.data);
      if (!d.ok) return o.bad.record(msg.subject, d.reason);
      if (o.leading())
        failExhausted(o, d.value.stream_seq).catch((err) =>
          o.log.debug("Max-deliveries advisory not handled", { error: (err as Error).message }),
        );
    },
  });
}

async function failExhausted(o: ExhaustedOptions, seq: number): Promise<void> {
  const { kv, names } = o;
  const stored = await o.jsm.streams.getMessage(names.streams.tasks, { seq });
  const d = decode(taskSchema, stored.data, MAX_PIPELINE_MESSAGE_BYTES);
  if (!d.ok) return;
  const task = d.value;
  if (!(await readResult(kv, task.request, task.task))) {
    const unsigned: TaskResult = {
      v: 1,
      request: task.request,
      task: task.task,
      status: "failed",
      node: o.node,
      capability: task.capability,
      error: `gave up after ${o.maxDeliver} attempts without a result (the node running it stopped or crashed each time)`,
      errors: await attemptErrors(kv, task.request, task.task),
      attempts: o.maxDeliver,
      started_at: Date.now(),
      finished_at: Date.now(),
      usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
      llm: "none",
      truncated: false,
    };
    const result = o.signer ? signResult(o.signer, unsigned) : unsigned;
    if (await recordResultOnce(kv, result)) {
      o.log.warn("Task failed", { task: task.task, request: task.request, attempts: result.attempts, error: result.error });
      const event = { v: 1, request: task.request, task: task.task, kind: "failed", node: o.node, capability: task.capability };
      await o.js.publish(
        names.taskEvents(task.request, task.task),
        encode({ ...event, at: Date.now(), attempt: result.attempts, error: result.error, result }),
      );
    }
  }
  await o.jsm.streams.deleteMessage(names.streams.tasks, seq).catch(() => {});
}
