// The request workflow (Temporal's deterministic sandbox: only @temporalio/workflow and types here).
// Plan, run every sub-task as soon as its dependencies are done, answer. The deadline is a durable
// timer: when it fires first, the open sub-tasks are cancelled and the request is answered as failed.
import { ActivityCancellationType, CancellationScope, isCancellation, proxyActivities, sleep } from "@temporalio/workflow";
import type { Answered, PlannedTask, RequestActivities, RequestInput, SubTaskEnd } from "./types.ts";

const steps = proxyActivities<RequestActivities>({
  // Planning and synthesis call an LLM; a dead coordinator's step is retried on another one.
  startToCloseTimeout: "30m",
  heartbeatTimeout: "30s",
  retry: { initialInterval: "1s", backoffCoefficient: 2, maximumInterval: "30s", maximumAttempts: 10 },
});

const subTasks = proxyActivities<RequestActivities>({
  // Waiting for a node's result: as long as the request may last; the heartbeat notices a dead coordinator.
  startToCloseTimeout: "24h",
  heartbeatTimeout: "5s",
  retry: { initialInterval: "1s", backoffCoefficient: 2, maximumInterval: "10s" },
  // The activity removes the queued sub-task when cancelled; wait for it to say so.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

export async function requestWorkflow(input: RequestInput): Promise<Answered> {
  const planned = await steps.plan(input);
  if ("rejected" in planned) return steps.reject({ request: input.msg.request, error: planned.rejected });

  const ends = new Map<string, SubTaskEnd>();
  const byId = new Map(planned.tasks.map((t) => [t.id, t]));
  const running = new Map<string, Promise<SubTaskEnd>>();
  // Each sub-task starts as soon as its own dependencies are done: full parallelism, no loop.
  const run = (t: PlannedTask): Promise<SubTaskEnd> => {
    let p = running.get(t.id);
    if (!p) {
      p = Promise.all(t.depends_on.map((d) => run(byId.get(d)!))).then((deps) => {
        const broken = deps.find((d) => d.status !== "completed");
        if (broken) return { id: t.id, status: "skipped" as const, reason: `dependency ${broken.id} ${broken.status}` };
        return subTasks.runSubTask({ request: input.msg.request, task: t.id, deadline_at: input.deadline_at });
      });
      p.then((e) => ends.set(t.id, e)).catch(() => {});
      running.set(t.id, p);
    }
    return p;
  };

  let expired = false;
  const work = new CancellationScope();
  await Promise.race([
    work
      .run(() => Promise.all(planned.tasks.map(run)))
      .catch((err) => {
        if (!isCancellation(err)) throw err;
      }),
    sleep(Math.max(0, input.deadline_at - Date.now())).then(() => {
      expired = ends.size < planned.tasks.length;
      if (expired) work.cancel();
    }),
  ]);
  const final = planned.tasks.map(
    (t) => ends.get(t.id) ?? { id: t.id, status: "skipped" as const, reason: "the request's deadline passed before it finished" },
  );
  return steps.answer({ request: input.msg.request, ends: final, expired });
}
