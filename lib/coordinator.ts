// The coordinator: while it holds the leadership lease, take requests, plan them, run them (see
// request-run.ts) and answer each exactly once. A redelivered request (its leader died) resumes from
// the recorded plan and results; one already answered is answered again from its record, deduplicated.
import type { JetStreamClient, JetStreamManager, JsMsg, KV, NatsConnection, Subscription } from "nats";
import { z } from "zod";
import { acceptWorkItem, type BadInputCounter } from "./bad-input.ts";
import type { Config } from "./config.ts";
import { createDoorbell } from "./doorbell.ts";
import { type Leadership, startLeadership } from "./leadership.ts";
import type { LlmProvider } from "./llm-types.ts";
import type { Logger } from "./log.ts";
import { decode, encode } from "./messages.ts";
import { type Plan, PlanError, planFromValue } from "./plan.ts";
import { makePlan, type OnlineCapabilities, plansWithLlm } from "./planner.ts";
import { pullAvailable } from "./pull.ts";
import { type RequestRun, runRequest, titleOf } from "./request-run.ts";
import { type Signer, signResult, verifyResult } from "./signing.ts";
import { ensureConsumer, openTasksKv } from "./streams.ts";
import type { SwarmNames } from "./subjects.ts";
import { synthesize, totalUsage } from "./synthesis.ts";
import {
  MAX_PIPELINE_MESSAGE_BYTES,
  type PlanSummary,
  type RequestEvent,
  type RequestMsg,
  requestSchema,
  type TaskResult,
  taskEventSchema,
  taskSchema,
} from "./task-messages.ts";
import { attemptErrors, type RequestRecord, readRequest, readResult, recordResultOnce, writeRequest } from "./task-records.ts";

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
  /** Capabilities and ids of the nodes online now, for planning and routing. */
  online: () => { capabilities: OnlineCapabilities; nodes: Set<string> };
  /** Resolves once the start-up membership query is answered (plan only after it). */
  discovered: Promise<void>;
  /** With swarm.security.signing: this coordinator's key. */
  signer?: Signer;
}

export interface Coordinator {
  counts(): { active: number; answered: number; failed: number };
  leading(): boolean;
  /** A peer went offline: re-route sub-tasks pinned to it. */
  nodeOffline(node: string): void;
  stop(): Promise<void>;
}

/** Thrown before a write by a coordinator that no longer holds the lease. */
class StaleLeaderError extends Error {
  override name = "StaleLeaderError";
}

type RequestEventBody = Omit<RequestEvent, "v" | "request" | "at" | "coordinator">;

const IDLE_POLL_MS = 1_000;
/** How long one waiting pull for requests stays open (also how long a stop waits for it at most). */
const REQUEST_WAIT_MS = 250;

/** The part of JetStream's max-deliveries advisory the coordinator uses. */
const maxDeliveriesAdvisorySchema = z.object({ stream_seq: z.number().int().positive() });

export async function startCoordinator(o: CoordinatorOptions): Promise<Coordinator> {
  const { nc, names, cfg, log } = o;
  const js: JetStreamClient = nc.jetstream();
  const kv: KV = await openTasksKv(nc, names, cfg);
  // Ack wait = lease TTL: a dead leader's request reaches the next leader about when it takes over.
  await ensureConsumer(o.jsm, names.streams.requests, names.consumers.requests, names.requestSubmit, {
    ackWait: cfg.swarm.lease_ttl,
    maxDeliver: -1,
  });

  // Results are trusted from the configured workers, and from this coordinator (poison sub-tasks).
  const trustedResultKeys = new Set([...cfg.swarm.security.trusted_workers, ...(o.signer ? [o.signer.publicKey] : [])]);
  const runs = new Map<string, RequestRun>();
  const handling = new Set<Promise<void>>();
  const active = new Set<string>();
  let answered = 0;
  let failed = 0;
  let stopping = false;
  const bell = createDoorbell();
  const wake = () => bell.ring();

  const leadership: Leadership = await startLeadership({
    nc,
    names,
    node: o.node,
    ttlMs: cfg.swarm.lease_ttl,
    replicas: cfg.swarm.nats.replicas,
    log,
    onChange: (leading) => {
      if (leading) return wake();
      // Stepped down: stop following every request; the next leader gets them redelivered.
      for (const run of runs.values()) run.abandon(new StaleLeaderError("stepped down"));
    },
  });
  const fence = () => {
    if (!leadership.holds()) throw new StaleLeaderError("no longer the leading coordinator");
  };

  const subs: Subscription[] = [
    nc.subscribe(names.taskEventsAll, {
      callback: (_e, msg) => {
        const d = decode(taskEventSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
        if (!d.ok) return o.bad.record(msg.subject, d.reason);
        // A coordinator waking from a pause may find events queued: once it no longer leads, they are
        // the new leader's to act on (its runs are abandoned as soon as the lease watchdog runs).
        if (leadership.holds()) runs.get(d.value.request)?.onTaskEvent(d.value);
      },
    }),
    nc.subscribe(names.maxDeliveriesAdvisory, {
      callback: (_e, msg) => {
        // Anyone on the bus can publish here: count what is not an advisory, like any other bad input.
        const d = decode(maxDeliveriesAdvisorySchema, msg.data);
        if (!d.ok) return o.bad.record(msg.subject, d.reason);
        void failExhausted(msg.data);
      },
    }),
  ];

  const loop = (async () => {
    const from = { stream: names.streams.requests, durable: names.consumers.requests, timeoutMs: 1_000 };
    while (!stopping) {
      if (!leadership.holds() || active.size >= cfg.swarm.max_concurrent) {
        await bell.wait(IDLE_POLL_MS);
        continue;
      }
      // A waiting pull: the server hands a request over the moment it is stored, with no doorbell and
      // no second round trip; then whatever else is waiting, up to the free slots, in one more pull.
      // Each is handled as soon as it is here (a no-wait pull may go unanswered on nats-server 2.9).
      const first = await pullAvailable(nc, { ...from, max: 1, waitMs: REQUEST_WAIT_MS });
      take(first);
      const free = cfg.swarm.max_concurrent - active.size;
      if (first.length > 0 && first[0]!.info.pending > 0 && free > 0) take(await pullAvailable(nc, { ...from, max: free, waitMs: 0 }));
    }
  })();

  function take(msgs: JsMsg[]): void {
    for (const msg of msgs) {
      if (stopping || !leadership.holds()) {
        msg.nak(); // the next leader (or this one, later) takes it at once
        continue;
      }
      const h = handle(msg).finally(() => handling.delete(h));
      handling.add(h);
    }
  }

  const requestEvent = (request: string, ev: RequestEventBody) => encode({ v: 1, request, at: Date.now(), coordinator: o.node, ...ev });
  /** Progress for followers: the EVENTS stream stores it; nobody waits for that ack. */
  const tell = (request: string, ev: RequestEventBody) => {
    try {
      nc.publish(names.requestEvents(request), requestEvent(request, ev));
    } catch {
      // connection closed: followers learn from the answer
    }
  };
  /** The answer: stored, deduplicated by its id, before the request is acked. */
  const publishAnswer = (request: string, ev: RequestEventBody) =>
    js.publish(names.requestEvents(request), requestEvent(request, ev), { msgID: `${request}.answer` });

  async function handle(msg: JsMsg): Promise<void> {
    const req = acceptWorkItem(msg, requestSchema, o.bad);
    if (!req) return;
    if (active.has(req.request)) return; // already handling it; the redelivery will be acked with it
    const keepAlive = setInterval(() => msg.working(), Math.max(300, cfg.swarm.lease_ttl / 3));
    const started = Date.now();
    active.add(req.request);
    o.onChange?.();
    try {
      const record = msg.info.deliveryCount > 1 ? await readRequest(kv, req.request) : undefined;
      if (record?.status === "answered" && record.answer) {
        fence();
        // Answered before its leader could ack: send the same answer again; the stream dedupes it.
        await publishAnswer(req.request, record.answer);
        msg.ack();
        return;
      }
      const resumable = record?.plan && record.summary ? { plan: record.plan, summary: record.summary } : undefined;
      // Asking the LLM for a plan takes a while: tell the submitter at once that a coordinator has it.
      // Otherwise `planned` follows within a millisecond and says the same (one stored event less).
      if (!resumable && plansWithLlm({ explicit: req.plan, capabilities: req.capabilities, llm: o.llm })) {
        fence();
        tell(req.request, { kind: "accepted" });
      }
      const { plan, summary, resumed } = resumable ? { ...resumable, resumed: true } : { ...(await planRequest(req)), resumed: false };
      fence();
      if (resumed)
        log.info("Request resumed", { request: req.request, previous_coordinator: record?.coordinator, tasks: plan.tasks.length });
      else {
        tell(req.request, { kind: "planned", plan: summary });
        log.info("Request planned", {
          request: req.request,
          planner: summary.planner,
          tasks: plan.tasks.map((t) => `${t.id}:${t.capability}`).join(","),
        });
      }
      const base: RequestRecord = {
        v: 1,
        status: "running",
        coordinator: o.node,
        lease: leadership.revision(),
        started_at: record?.started_at ?? started,
        plan,
        summary,
      };
      await writeRequest(kv, req.request, base);

      const run = runRequest(
        {
          js,
          kv,
          names,
          log,
          coordinator: o.node,
          defaultTimeoutMs: cfg.swarm.tasks.timeout,
          fence,
          signer: o.signer,
          checkResult: o.signer ? (r) => verifyResult(r, trustedResultKeys) : undefined,
          onAssigned: (task, node) => {
            const capability = plan.tasks.find((t) => t.id === task)?.capability;
            // No request event: the node's own `started` task event already tells followers.
            log.info("Task assigned", { task, request: req.request, node, capability });
          },
        },
        req.request,
        plan,
        resumed,
      );
      runs.set(req.request, run);
      const outcomes = await run.outcomes;

      const merged = await synthesize(
        { request: req.request, requestText: req.text, plan: summary, outcomes, durationMs: Date.now() - base.started_at },
        o.llm,
      );
      const missing = outcomes.filter((x) => x.required && x.result?.status !== "completed").map((x) => x.id);
      const status = missing.length ? "failed" : outcomes.some((x) => x.result?.status !== "completed") ? "partial" : "completed";
      const usage = totalUsage(outcomes);
      if (merged.usage) {
        usage.prompt_tokens += merged.usage.prompt_tokens;
        usage.completion_tokens += merged.usage.completion_tokens;
        usage.total_tokens += merged.usage.total_tokens;
      }
      const answer: RequestEventBody = {
        kind: "answer",
        answer: merged.text,
        status,
        usage,
        duration_ms: Date.now() - base.started_at,
        error: missing.length ? `required sub-task failed: ${missing.join(", ")}` : undefined,
      };
      await finish(msg, req.request, base, answer);
      if (status === "failed") failed++;
      else answered++;
      log.info("Request answered", {
        request: req.request,
        status,
        tasks: outcomes.length,
        duration_ms: answer.duration_ms,
        tokens: usage.total_tokens,
      });
    } catch (err) {
      if (err instanceof PlanError) {
        failed++;
        log.warn("Request rejected", { request: req.request, error: err.message });
        const base: RequestRecord = { v: 1, status: "running", coordinator: o.node, lease: leadership.revision(), started_at: started };
        await finish(msg, req.request, base, { kind: "failed", error: err.message, duration_ms: Date.now() - started }).catch(() =>
          msg.nak(1_000),
        );
      } else if (err instanceof StaleLeaderError) {
        log.warn("Request handed back", { request: req.request, reason: err.message });
        msg.nak(); // the new leader takes it at once
      } else {
        log.error("Request handling failed; it will be retried", { request: req.request, error: (err as Error).message });
        msg.nak(5_000);
      }
    } finally {
      clearInterval(keepAlive);
      runs.delete(req.request);
      active.delete(req.request);
      o.onChange?.();
      wake();
    }
  }

  /** Record the answer, make sure we still lead, publish it once (deduplicated by id), then ack. */
  async function finish(msg: JsMsg, request: string, base: RequestRecord, answer: RequestEventBody): Promise<void> {
    fence();
    // Record and lease check together; both must succeed before the answer goes out.
    const [, leading] = await Promise.all([
      writeRequest(kv, request, { ...base, status: "answered", lease: leadership.revision(), answer }),
      leadership.confirm(),
    ]);
    if (!leading) throw new StaleLeaderError("lease lost before answering");
    await publishAnswer(request, answer);
    msg.ack();
  }

  async function planRequest(req: RequestMsg): Promise<{ plan: Plan; summary: PlanSummary }> {
    const t = cfg.swarm.tasks;
    await o.discovered;
    const explicit = req.plan === undefined ? undefined : planFromValue(req.plan, "the submitted plan");
    const online = o.online();
    const made = await makePlan({
      request: req.text,
      online: online.capabilities,
      nodes: online.nodes,
      limits: { maxFanout: t.max_fanout, maxDepth: t.max_depth, maxPromptBytes: t.max_prompt_bytes },
      explicit,
      llm: o.llm,
      capabilities: req.capabilities,
    });
    const summary: PlanSummary = {
      planner: made.planner,
      note: made.note,
      tasks: made.plan.tasks.map((t) => ({
        id: t.id,
        title: titleOf(t),
        capability: t.capability,
        priority: t.priority,
        depends_on: t.depends_on,
        required: t.required,
      })),
    };
    return { plan: made.plan, summary };
  }

  /** A sub-task used up its attempts without any node recording an outcome (e.g. it crashed them). */
  async function failExhausted(data: Uint8Array): Promise<void> {
    if (!leadership.holds()) return;
    let seq: number;
    try {
      seq = (JSON.parse(new TextDecoder().decode(data)) as { stream_seq: number }).stream_seq;
      const stored = await o.jsm.streams.getMessage(names.streams.tasks, { seq });
      const d = decode(taskSchema, stored.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (!d.ok) return;
      const task = d.value;
      if (!(await readResult(kv, task.request, task.task))) {
        const errors = await attemptErrors(kv, task.request, task.task);
        const unsigned: TaskResult = {
          v: 1,
          request: task.request,
          task: task.task,
          status: "failed",
          node: o.node,
          capability: task.capability,
          error: `gave up after ${cfg.swarm.tasks.max_deliver} attempts without a result (the node running it stopped or crashed each time)`,
          errors,
          attempts: cfg.swarm.tasks.max_deliver,
          started_at: Date.now(),
          finished_at: Date.now(),
          usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
          llm: "none",
          truncated: false,
        };
        const result = o.signer ? signResult(o.signer, unsigned) : unsigned;
        if (await recordResultOnce(kv, result)) {
          log.warn("Task failed", { task: task.task, request: task.request, attempts: result.attempts, error: result.error });
          await js.publish(
            names.taskEvents(task.request, task.task),
            encode({
              v: 1,
              request: task.request,
              task: task.task,
              kind: "failed",
              node: o.node,
              capability: task.capability,
              at: Date.now(),
              attempt: result.attempts,
              error: result.error,
              result,
            }),
          );
        }
      }
      await o.jsm.streams.deleteMessage(names.streams.tasks, seq).catch(() => {});
    } catch (err) {
      log.debug("Max-deliveries advisory not handled", { error: (err as Error).message });
    }
  }

  return {
    counts: () => ({ active: active.size, answered, failed }),
    leading: () => leadership.holds(),
    nodeOffline: (node) => {
      for (const run of runs.values()) run.onNodeOffline(node);
    },
    async stop() {
      stopping = true;
      wake();
      await loop;
      // Hand unfinished requests back (nak): a standby resumes them now, or the next coordinator later.
      for (const run of runs.values()) run.abandon(new StaleLeaderError("coordinator stopping"));
      await Promise.all(handling);
      for (const s of subs) s.unsubscribe();
      await leadership.stop();
    },
  };
}
