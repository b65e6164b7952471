// The request workflow (Temporal's deterministic sandbox: only @temporalio/workflow and types here).
// Plan, run every sub-task as soon as its dependencies are done, answer. The deadline is a durable
// timer: when it fires first, the open sub-tasks are cancelled and the request is answered as failed.
import {
  ActivityCancellationType,
  CancellationScope,
  condition,
  defineSignal,
  isCancellation,
  proxyActivities,
  setHandler,
  sleep,
} from "@temporalio/workflow";
import type { Answered, DecisionSignal, PlannedTask, RequestActivities, RequestInput, SubTaskEnd, SubTaskParked } from "./types.ts";

/** A person decided a tool call of this request (the coordinator signals it; `temporal workflow show` lists it). */
export const decisionSignal = defineSignal<[DecisionSignal]>("decision");
/** While a call waits, the stored decisions are read this often too (a signal sent while no coordinator led is lost). */
const DECISION_POLL_MS = 60_000;

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
  const decided = new Map<string, string>();
  setHandler(decisionSignal, (d) => {
    decided.set(d.id, d.outcome);
  });
  const request = input.msg.request;

  /** Until one of the parked calls is decided (its id) or they time out (`<id>.expired`). */
  const decision = async (p: SubTaskParked): Promise<string> => {
    for (;;) {
      const hit = p.approvals.find((id) => decided.has(id));
      if (hit) return hit;
      const left = p.expires_at - Date.now();
      if (left <= 0) return `${p.approvals[0]}.expired`;
      if (await condition(() => p.approvals.some((id) => decided.has(id)), Math.min(left, DECISION_POLL_MS))) continue;
      const stored = await steps.decided({ ids: p.approvals });
      if (stored) decided.set(stored.id, stored.outcome);
    }
  };
  /** One sub-task: run; parked, wait for the decision in this workflow, and run it again from its steps. */
  const runOne = async (t: PlannedTask): Promise<SubTaskEnd> => {
    let r = await subTasks.runSubTask({ request, task: t.id, deadline_at: input.deadline_at });
    while (r.status === "parked") {
      const parked: SubTaskParked = r;
      const cause = await decision(parked);
      r = await subTasks.runSubTask({ request, task: t.id, deadline_at: input.deadline_at, resume: { cause, parked } });
    }
    return r;
  };

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
        return runOne(t);
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
