// Running one request's plan: queue sub-tasks whose dependencies are done, follow their events and
// records, re-route pinned sub-tasks of nodes that went offline, and resolve once every sub-task has
// an outcome. Resuming (a new leader) starts from the results already recorded.
import type { JetStreamClient, KV } from "nats";
import type { Logger } from "../../lib/log.ts";
import { encode } from "../../lib/messages.ts";
import { type Plan, type PlanTask, titleOf } from "../../lib/plan.ts";
import { type Signer, signMessage, type Verdict } from "../../lib/signing.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import type { TaskEvent, TaskMsg, TaskResult } from "../../lib/task-messages.ts";
import { readResult } from "../../lib/task-records.ts";
import type { SubTaskOutcome } from "./synthesis.ts";

type TaskState = "waiting" | "queued" | "running" | "completed" | "failed" | "skipped";
interface Tracked {
  task: PlanTask;
  state: TaskState;
  result?: TaskResult;
  skipped?: string;
  /** The node running it now (from its events). */
  node?: string;
  /** Re-routed away from its pinned node. */
  rerouted?: boolean;
}

export interface RunContext {
  js: JetStreamClient;
  kv: KV;
  names: SwarmNames;
  log: Logger;
  coordinator: string;
  defaultTimeoutMs: number;
  /** Throws when this coordinator is no longer the leader; called before every write. */
  fence: () => void;
  onAssigned: (task: string, node: string) => void;
  /** With signing on: signs each queued sub-task, and checks each result (a failed check fails the sub-task). */
  signer?: Signer;
  checkResult?: (r: TaskResult) => Verdict;
}

export interface RequestRun {
  outcomes: Promise<SubTaskOutcome[]>;
  onTaskEvent(ev: TaskEvent): void;
  onNodeOffline(node: string): void;
  /** Stops following (a stale leader handing the request over); `outcomes` rejects with `reason`. */
  abandon(reason: Error): void;
}

const RECONCILE_MS = 2_000;

export function runRequest(ctx: RunContext, request: string, plan: Plan, resumed = false): RequestRun {
  const tracked = new Map<string, Tracked>(plan.tasks.map((t) => [t.id, { task: t, state: "waiting" }]));
  let finish: (o: SubTaskOutcome[]) => void = () => {};
  let fail: (e: unknown) => void = () => {};
  const outcomes = new Promise<SubTaskOutcome[]>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  let over = false;
  const offline = new Set<string>();
  const terminal = (x: Tracked) => x.state === "completed" || x.state === "failed" || x.state === "skipped";

  const done = () => {
    over = true;
    clearInterval(reconcile);
    finish(
      plan.tasks.map((t) => {
        const x = tracked.get(t.id)!;
        return { id: t.id, title: titleOf(t), capability: t.capability, required: t.required, result: x.result, skipped: x.skipped };
      }),
    );
  };
  const guard = (work: () => Promise<void>) => {
    work().catch((err) => {
      if (over) return;
      over = true;
      clearInterval(reconcile);
      fail(err);
    });
  };

  const queue = async (x: Tracked, viaQueue = false) => {
    const t = x.task;
    const deps = t.depends_on.map((id) => tracked.get(id)!);
    const msg: TaskMsg = {
      v: 1,
      request,
      task: t.id,
      title: titleOf(t),
      capability: t.capability,
      priority: t.priority,
      prompt: t.prompt,
      inputs: deps.map((d) => ({ task: d.task.id, title: titleOf(d.task), result: d.result?.text ?? "" })),
      timeout_ms: t.timeout_ms ?? ctx.defaultTimeoutMs,
      coordinator: ctx.coordinator,
    };
    const pinned = t.node !== undefined && !viaQueue && !offline.has(t.node);
    const subject = pinned ? ctx.names.taskDirect(t.node!) : ctx.names.taskQueue(t.capability, t.priority);
    ctx.fence();
    // The message id makes a re-queue (a resumed request) a no-op within the stream's dedupe window.
    const payload = encode(msg);
    await ctx.js.publish(subject, payload, {
      msgID: `${request}.${t.id}${viaQueue ? ".rerouted" : ""}`,
      headers: ctx.signer ? signMessage(ctx.signer, subject, payload) : undefined,
    });
    ctx.log.debug("Task queued", {
      task: t.id,
      request,
      capability: t.capability,
      priority: t.priority,
      node: pinned ? t.node : undefined,
    });
  };

  const dispatchReady = async (): Promise<void> => {
    let changed = false;
    const ready: Tracked[] = [];
    for (const x of tracked.values()) {
      if (x.state !== "waiting") continue;
      const deps = x.task.depends_on.map((id) => tracked.get(id)!);
      const broken = deps.find((d) => d.state === "failed" || d.state === "skipped");
      if (broken) {
        x.state = "skipped";
        x.skipped = `dependency ${broken.task.id} ${broken.state}`;
        changed = true;
        continue;
      }
      if (!deps.every((d) => d.state === "completed")) continue;
      x.state = "queued";
      ready.push(x);
    }
    // All at once: a fan-out of 64 should not wait 64 publish round trips before its last sub-task runs.
    await Promise.all(ready.map((x) => queue(x)));
    if (changed) return dispatchReady();
    if (!over && [...tracked.values()].every(terminal)) done();
  };

  /** `carried`: the result from the node's event (already recorded); otherwise read from KV. */
  const settle = async (id: string, carried?: TaskResult) => {
    const x = tracked.get(id);
    if (!x || x.result || over) return;
    const fits = carried && carried.request === request && carried.task === id;
    let result = fits ? carried : await readResult(ctx.kv, request, id);
    if (!result || x.result) return;
    const verdict = ctx.checkResult?.(result);
    if (verdict && !verdict.ok) {
      ctx.log.warn("Result rejected", { task: id, request, node: result.node, reason: verdict.reason });
      result = { ...result, status: "failed", text: undefined, error: `result rejected: ${verdict.reason}` };
    }
    x.result = result;
    x.state = result.status;
    await dispatchReady();
  };

  // Events are fast but may not reach us; the records in KV always do. Look now and then.
  const reconcile = setInterval(() => {
    for (const [id, x] of tracked) if (x.state === "queued" || x.state === "running") guard(() => settle(id));
  }, RECONCILE_MS);

  guard(async () => {
    // Resuming: whatever already has a result is settled without running again.
    if (resumed)
      await Promise.all(
        plan.tasks.map(async (t) => {
          const r = await readResult(ctx.kv, request, t.id);
          if (r) Object.assign(tracked.get(t.id)!, { result: r, state: r.status });
        }),
      );
    await dispatchReady();
  });

  return {
    outcomes,
    onTaskEvent(ev) {
      const x = tracked.get(ev.task);
      if (!x || over) return;
      if (ev.kind === "started") {
        if (x.state === "queued") x.state = "running";
        x.node = ev.node;
        ctx.onAssigned(ev.task, ev.node);
      } else if (ev.kind === "completed" || ev.kind === "failed" || ev.kind === "duplicate") {
        guard(() => settle(ev.task, ev.kind === "duplicate" ? undefined : ev.result));
      }
    },
    onNodeOffline(node) {
      offline.add(node);
      for (const x of tracked.values()) {
        if (x.task.node !== node || x.rerouted || terminal(x) || x.state === "waiting") continue;
        x.rerouted = true;
        ctx.log.info("Task re-routed", { task: x.task.id, request, from_node: node, capability: x.task.capability });
        guard(() => queue(x, true));
      }
    },
    abandon(reason) {
      if (over) return;
      over = true;
      clearInterval(reconcile);
      fail(reason);
    },
  };
}
