// The coordinator's work: take a request, plan it, queue ready sub-tasks by capability and priority,
// follow their events and records, and answer once every sub-task has an outcome.
import type { JetStreamClient, JetStreamManager, JsMsg, KV, NatsConnection, Subscription } from "nats";
import type { BadInputCounter } from "./bad-input.ts";
import { createDoorbell } from "./doorbell.ts";
import type { Config } from "./config.ts";
import type { LlmProvider } from "./llm-types.ts";
import type { Logger } from "./log.ts";
import { decode, encode } from "./messages.ts";
import { type Plan, PlanError, type PlanTask, planFromValue } from "./plan.ts";
import { makePlan, type OnlineCapabilities } from "./planner.ts";
import { ensureConsumer, openTasksKv } from "./streams.ts";
import { type SwarmNames, taskKeys } from "./subjects.ts";
import { type SubTaskOutcome, synthesize, totalUsage } from "./synthesis.ts";
import {
  MAX_PIPELINE_MESSAGE_BYTES,
  type PlanSummary,
  type RequestEvent,
  type RequestMsg,
  requestSchema,
  type TaskEvent,
  taskEventSchema,
  type TaskMsg,
  type TaskResult,
  taskResultSchema,
} from "./task-messages.ts";

export interface CoordinatorOptions {
  nc: NatsConnection;
  jsm: JetStreamManager;
  names: SwarmNames;
  cfg: Config;
  node: string;
  llm: LlmProvider;
  log: Logger;
  bad: BadInputCounter;
  /** Called when a request starts or ends (the node's load changed). */
  onChange?: () => void;
  /** Capabilities of the nodes online now, for planning and routing. */
  online: () => OnlineCapabilities;
  /** Resolves once the start-up membership query is answered (plan only after it). */
  discovered: Promise<void>;
}

export interface Coordinator {
  counts(): { active: number; answered: number; failed: number };
  stop(): Promise<void>;
}

const RECONCILE_MS = 2_000;
const IDLE_POLL_MS = 1_000;

type TaskState = "waiting" | "queued" | "running" | "completed" | "failed" | "skipped";
interface Tracked {
  task: PlanTask;
  state: TaskState;
  result?: TaskResult;
  skipped?: string;
  queuedAt?: number;
}

export async function startCoordinator(o: CoordinatorOptions): Promise<Coordinator> {
  const { nc, names, cfg, log } = o;
  const js: JetStreamClient = nc.jetstream();
  const kv = await openTasksKv(nc, names, cfg);
  await ensureConsumer(o.jsm, names.streams.requests, names.consumers.requests, names.requestSubmit,
    { ackWait: cfg.swarm.tasks.ack_wait, maxDeliver: -1 });

  const active = new Map<string, (ev: TaskEvent) => void>();
  let answered = 0;
  let failed = 0;
  let stopping = false;
  const bell = createDoorbell();
  const wake = () => bell.ring();

  const events = nc.subscribe(names.taskEventsAll, {
    callback: (_err, msg) => {
      const d = decode(taskEventSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (!d.ok) return o.bad.record(msg.subject, d.reason);
      active.get(d.value.request)?.(d.value);
    },
  });
  const doorbell: Subscription = nc.subscribe(names.requestSubmit, { callback: () => wake() });

  const loop = (async () => {
    while (!stopping) {
      while (!stopping && active.size < cfg.swarm.max_concurrent) {
        let msg: JsMsg;
        try {
          msg = await js.pull(names.streams.requests, names.consumers.requests, 0);
        } catch {
          break; // no requests waiting
        }
        void handle(msg);
      }
      await bell.wait(IDLE_POLL_MS);
    }
  })();

  const publishRequestEvent = (req: string, ev: Omit<RequestEvent, "v" | "request" | "at" | "coordinator">) =>
    js.publish(names.requestEvents(req), encode({ v: 1, request: req, at: Date.now(), coordinator: o.node, ...ev }))
      .catch((err) => log.warn("Request event not stored", { request: req, kind: ev.kind, error: (err as Error).message }));

  async function handle(msg: JsMsg): Promise<void> {
    const d = decode(requestSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
    if (!d.ok) {
      o.bad.record(msg.subject, d.reason);
      msg.term(d.reason);
      return;
    }
    const req = d.value;
    const keepAlive = setInterval(() => msg.working(), Math.max(500, cfg.swarm.tasks.ack_wait / 3));
    const started = Date.now();
    active.set(req.request, () => {});
    o.onChange?.();
    try {
      // Only a redelivered request can have been answered already (a coordinator died before its ack).
      if (msg.info.deliveryCount > 1 && (await alreadyAnswered(kv, req.request))) {
        msg.ack();
        return;
      }
      void publishRequestEvent(req.request, { kind: "accepted" }); // ordered on the connection; no need to wait
      const made = await plan(req);
      const summary: PlanSummary = {
        planner: made.planner,
        note: made.note,
        tasks: made.plan.tasks.map((t) => ({ id: t.id, title: titleOf(t), capability: t.capability, priority: t.priority, depends_on: t.depends_on, required: t.required })),
      };
      void publishRequestEvent(req.request, { kind: "planned", plan: summary });
      log.info("Request planned", { request: req.request, planner: made.planner, tasks: made.plan.tasks.map((t) => `${t.id}:${t.capability}`).join(",") });
      await kv.put(taskKeys.request(req.request), encode({ v: 1, status: "running", coordinator: o.node, plan: made.plan, started_at: started }));

      const outcomes = await runPlan(req, made.plan);
      const input = { request: req.request, requestText: req.text, plan: summary, outcomes, durationMs: Date.now() - started };
      const merged = await synthesize(input, o.llm);
      const failedRequired = outcomes.some((x) => x.required && x.result?.status !== "completed");
      const anyFailed = outcomes.some((x) => x.result?.status !== "completed");
      const status = failedRequired ? "failed" : anyFailed ? "partial" : "completed";
      const usage = totalUsage(outcomes);
      if (merged.usage) {
        usage.prompt_tokens += merged.usage.prompt_tokens;
        usage.completion_tokens += merged.usage.completion_tokens;
        usage.total_tokens += merged.usage.total_tokens;
      }
      await publishRequestEvent(req.request, {
        kind: "answer", answer: merged.text, status, usage, duration_ms: Date.now() - started,
        error: failedRequired ? `required sub-task failed: ${outcomes.filter((x) => x.required && x.result?.status !== "completed").map((x) => x.id).join(", ")}` : undefined,
      });
      await kv.put(taskKeys.request(req.request), encode({ v: 1, status: "answered", answer_status: status, coordinator: o.node, finished_at: Date.now() }));
      if (status === "failed") failed++;
      else answered++;
      log.info("Request answered", { request: req.request, status, tasks: outcomes.length, duration_ms: Date.now() - started, tokens: usage.total_tokens });
      msg.ack();
    } catch (err) {
      if (err instanceof PlanError) {
        failed++;
        log.warn("Request rejected", { request: req.request, error: err.message });
        await publishRequestEvent(req.request, { kind: "failed", error: err.message, duration_ms: Date.now() - started });
        await kv.put(taskKeys.request(req.request), encode({ v: 1, status: "answered", answer_status: "rejected", error: err.message }));
        msg.ack();
      } else {
        log.error("Request handling failed; it will be retried", { request: req.request, error: (err as Error).message });
        msg.nak(5_000);
      }
    } finally {
      clearInterval(keepAlive);
      active.delete(req.request);
      o.onChange?.();
      wake();
    }
  }

  async function plan(req: RequestMsg) {
    const t = cfg.swarm.tasks;
    await o.discovered;
    const explicit: Plan | undefined = req.plan === undefined ? undefined : planFromValue(req.plan, "the submitted plan");
    return makePlan({
      request: req.text,
      online: o.online(),
      limits: { maxFanout: t.max_fanout, maxDepth: t.max_depth, maxPromptBytes: t.max_prompt_bytes },
      explicit,
      llm: o.llm,
      capabilities: req.capabilities,
    });
  }

  /** Queues ready sub-tasks until every one has an outcome. */
  function runPlan(req: RequestMsg, plan: Plan): Promise<SubTaskOutcome[]> {
    const tracked = new Map<string, Tracked>(plan.tasks.map((t) => [t.id, { task: t, state: "waiting" }]));
    return new Promise((resolve) => {
      const finished = () => [...tracked.values()].every((x) => ["completed", "failed", "skipped"].includes(x.state));
      const finish = () => {
        clearInterval(reconcile);
        resolve(plan.tasks.map((t) => {
          const x = tracked.get(t.id)!;
          return { id: t.id, title: titleOf(t), capability: t.capability, required: t.required, result: x.result, skipped: x.skipped };
        }));
      };

      const dispatchReady = async () => {
        for (const x of tracked.values()) {
          if (x.state !== "waiting") continue;
          const deps = x.task.depends_on.map((id) => tracked.get(id)!);
          const broken = deps.find((dep) => dep.state === "failed" || dep.state === "skipped");
          if (broken) {
            x.state = "skipped";
            x.skipped = `dependency ${broken.task.id} ${broken.state}`;
            continue;
          }
          if (!deps.every((dep) => dep.state === "completed")) continue;
          x.state = "queued";
          x.queuedAt = Date.now();
          await queueTask(req, x.task, deps);
        }
        // Skipping may have unblocked (or finished) more of the plan.
        if ([...tracked.values()].some((x) => x.state === "waiting" && x.task.depends_on.some((id) => tracked.get(id)!.state === "skipped"))) {
          return dispatchReady();
        }
        if (finished()) finish();
      };

      const settle = async (id: string) => {
        const x = tracked.get(id);
        if (!x || x.result) return;
        const result = await readResult(kv, req.request, id);
        if (!result || x.result) return;
        x.result = result;
        x.state = result.status;
        await dispatchReady();
      };

      active.set(req.request, (ev) => {
        const x = tracked.get(ev.task);
        if (!x) return;
        if (ev.kind === "started") {
          if (x.state === "queued") x.state = "running";
          log.info("Task assigned", { task: ev.task, request: req.request, node: ev.node, capability: ev.capability, attempt: ev.attempt });
          void publishRequestEvent(req.request, { kind: "assigned", task: ev.task, node: ev.node });
        } else if (ev.kind === "completed" || ev.kind === "failed" || ev.kind === "duplicate") {
          void settle(ev.task);
        }
      });
      // Events are fast but not guaranteed to reach us; the records in KV are. Check them now and then.
      const reconcile = setInterval(() => {
        for (const [id, x] of tracked) if (x.state === "queued" || x.state === "running") void settle(id);
      }, RECONCILE_MS);
      void dispatchReady();
    });
  }

  async function queueTask(req: RequestMsg, task: PlanTask, deps: Tracked[]): Promise<void> {
    const msg: TaskMsg = {
      v: 1, request: req.request, task: task.id, title: titleOf(task), capability: task.capability,
      priority: task.priority, prompt: task.prompt,
      inputs: deps.map((dep) => ({ task: dep.task.id, title: titleOf(dep.task), result: dep.result?.text ?? "" })),
      timeout_ms: task.timeout_ms ?? cfg.swarm.tasks.timeout, coordinator: o.node,
    };
    // The message id makes a re-queue after a coordinator restart a no-op within the dedupe window.
    await js.publish(names.taskQueue(task.capability, task.priority), encode(msg), { msgID: `${req.request}.${task.id}` });
    log.debug("Task queued", { task: task.id, request: req.request, capability: task.capability, priority: task.priority });
  }

  return {
    counts: () => ({ active: active.size, answered, failed }),
    async stop() {
      stopping = true;
      doorbell.unsubscribe();
      wake();
      await loop;
      events.unsubscribe();
    },
  };
}

function titleOf(t: PlanTask): string {
  return t.title ?? `${t.id} (${t.capability})`;
}

async function alreadyAnswered(kv: KV, request: string): Promise<boolean> {
  const e = await kv.get(taskKeys.request(request)).catch(() => null);
  if (!e || e.operation !== "PUT") return false;
  try {
    return (JSON.parse(e.string()) as { status?: string }).status === "answered";
  } catch {
    return false;
  }
}

async function readResult(kv: KV, request: string, task: string): Promise<TaskResult | undefined> {
  const e = await kv.get(taskKeys.result(request, task)).catch(() => null);
  if (!e || e.operation !== "PUT") return undefined;
  const d = decode(taskResultSchema, e.value, MAX_PIPELINE_MESSAGE_BYTES);
  return d.ok ? d.value : undefined;
}
