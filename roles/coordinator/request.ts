// The requests a coordinator handles, and the life of one: plan it (or resume its recorded plan), run its
// sub-tasks, synthesize, answer exactly once. A request that cannot be answered normally is rejected,
// handed back to the next leader, retried with backoff, or, when handling it keeps failing, answered as
// failed and kept as a dead letter, so every request ends.
import type { JsMsg, KV } from "nats";
import { storeLargeAnswer } from "../../lib/answers.ts";
import type { Decision } from "../../lib/approvals.ts";
import { acceptWorkItem } from "../../lib/bad-input.ts";
import type { LlmProvider } from "../../lib/llm-types.ts";
import type { Counter } from "../../lib/metrics.ts";
import type { MemberNode } from "../../lib/node.ts";
import { PlanError } from "../../lib/plan.ts";
import type { RecordGuard } from "../../lib/record-guard.ts";
import { nodesWithTools, onlineCapabilities, onlineNodes, onlineTools } from "../../lib/registry.ts";
import { backoffDelay, TASK_BACKOFF } from "../../lib/retry.ts";
import type { Signer, Verdict } from "../../lib/signing.ts";
import { type RequestMsg, requestSchema, type TaskEvent, type TaskResult } from "../../lib/task-messages.ts";
import { countFailure, type RequestRecord, readRequest, writeDeadLetter, writeRequest } from "../../lib/task-records.ts";
import { answerRequest, type RequestEvents } from "./answer.ts";
import type { CoordinatorApprovals } from "./approvals.ts";
import { type GiveUpOptions, recordFailure } from "./give-up.ts";
import { type Leadership, StaleLeaderError } from "./leadership.ts";
import { planRequest, plansWithLlm } from "./planner.ts";
import { type RequestRun, runRequest } from "./request-run.ts";
import { answerFor } from "./synthesis.ts";
import type { TemporalRunner } from "./temporal/runner.ts";
import type { WhileLeading } from "./while-leading.ts";

/** Handling a request that fails this often (not counting hand-overs) makes it a dead letter. */
const MAX_REQUEST_FAILURES = 3;
/** Requests waiting on their sub-tasks hold no slot, but there are at most this many per slot. */
export const OPEN_PER_SLOT = 100;

export interface RequestContext {
  node: MemberNode;
  kv: KV;
  llm: LlmProvider;
  events: RequestEvents;
  records: RecordGuard;
  leadership: Leadership;
  whileLeading: WhileLeading;
  giveUp: GiveUpOptions;
  signer?: Signer;
  checkResult?: (r: TaskResult) => Verdict;
  /** Temporal mode: new requests become workflows while its worker polls. */
  temporal?: TemporalRunner;
  /** picoclaw_requests_total, by status. */
  answered: Counter;
  /** Decisions of parked sub-tasks' calls, and their audit trail. */
  approvals?: Omit<CoordinatorApprovals, "stop">;
}

export interface OpenRequests {
  /** Slots in use for intake: requests being planned or synthesized; all of them when too many are open. */
  slotsUsed(): number;
  /** Requests being planned or synthesized now (the coordinator's load). */
  running(): number;
  /** Handles one request message; `done` when it is answered, handed back or nakked. */
  take(msg: JsMsg, done: () => void): void;
  onTaskEvent(ev: TaskEvent): void;
  /** What was pinned to a node that is gone goes to its capability's queue. */
  onNodeOffline(node: string): void;
  /** A decision on a pending call: the parked sub-task of a request we run is sent again. */
  onDecision(d: Decision): void;
  /** Sub-tasks parked now, waiting for decisions. */
  parked(): number;
  /** Hands every unfinished request back (nak): the next leader resumes it from its record. */
  abandonAll(reason: string): void;
  /** Resolves when every request being handled has been acked or nakked. */
  settled(): Promise<void>;
}

export function openRequests(ctx: RequestContext): OpenRequests {
  const cfg = ctx.node.config;
  /** Requests being planned or synthesized: each holds one of max_concurrent slots. */
  const busy = new Set<string>();
  /** Every request this coordinator handles, waiting on sub-tasks or not. */
  const open = new Map<string, { run?: RequestRun }>();
  const handling = new Set<Promise<void>>();
  const runs = () => [...open.values()].flatMap((r) => (r.run ? [r.run] : []));
  return {
    slotsUsed: () => (open.size >= cfg.swarm.max_concurrent * OPEN_PER_SLOT ? Number.POSITIVE_INFINITY : busy.size),
    running: () => busy.size,
    take(msg, done) {
      const h = handle(ctx, msg, open, busy).finally(() => {
        handling.delete(h);
        done();
      });
      handling.add(h);
    },
    onTaskEvent(ev) {
      // A coordinator waking from a pause may find events queued: once it no longer leads, they are the
      // new leader's to act on.
      if (ctx.leadership.holds()) open.get(ev.request)?.run?.onTaskEvent(ev);
    },
    onNodeOffline: (node) => {
      for (const run of runs()) run.onNodeOffline(node);
    },
    onDecision(d) {
      if (ctx.leadership.holds()) open.get(d.request)?.run?.onDecision(d);
    },
    parked: () => runs().reduce((n, r) => n + r.parked(), 0),
    abandonAll: (reason) => {
      for (const run of runs()) run.abandon(new StaleLeaderError(reason));
    },
    settled: async () => {
      await Promise.all(handling);
    },
  };
}

async function handle(ctx: RequestContext, msg: JsMsg, open: Map<string, { run?: RequestRun }>, busy: Set<string>): Promise<void> {
  const { node, kv, llm, events, records, leadership, whileLeading, temporal } = ctx;
  const { config: cfg, log } = node;
  const t = cfg.swarm.tasks;
  const me = node.identity.node;
  const req = acceptWorkItem(msg, requestSchema, node.bad);
  if (!req || open.has(req.request)) return; // a redelivery of one we handle is acked with it
  const mine: { run?: RequestRun } = {};
  open.set(req.request, mine);
  busy.add(req.request);
  node.membership.heartbeatNow();
  const keepAlive = setInterval(() => msg.working(), Math.max(300, cfg.swarm.lease_ttl / 3));
  const started = Date.now();
  try {
    const record =
      msg.info.deliveryCount > 1 ? await whileLeading("read the request record", () => readRequest(kv, req.request, records)) : undefined;
    if (record?.status === "answered" && record.answer) {
      // Answered before its leader could ack: send the same answer again; the stream dedupes it.
      leadership.fence();
      await whileLeading("publish the answer", () => events.publishAnswer(req.request, record.answer!));
      msg.ack();
      return;
    }
    const deadlineAt = record?.deadline_at ?? req.submitted_at + Math.min(t.request_timeout, req.timeout_ms ?? Number.POSITIVE_INFINITY);
    // Temporal mode: the request becomes a workflow, which owns it from here (durability, failover).
    // One already handled here before (a recorded plan) stays on the JetStream path.
    if (temporal?.polling() && !record) {
      try {
        leadership.fence();
        await temporal.start(req, deadlineAt);
        msg.ack();
        log.info("Request started as a workflow", { request: req.request, address: temporal.address });
        return;
      } catch (err) {
        if (err instanceof StaleLeaderError) throw err;
        log.warn("Request not started as a workflow; running it without workflow persistence", {
          request: req.request,
          error: (err as Error).message.split("\n")[0],
        });
      }
    }
    const resumed = record?.plan && record.summary ? { plan: record.plan, summary: record.summary } : undefined;
    // Asking the LLM for a plan takes a while: tell the submitter at once that a coordinator has it.
    if (!resumed && plansWithLlm({ explicit: req.plan, capabilities: req.capabilities, llm })) {
      leadership.fence();
      events.tell(req.request, { kind: "accepted" });
    }
    await node.membership.discovered; // plan against the whole swarm, not the first few replies
    const { registry } = node.membership;
    const online = { capabilities: onlineCapabilities(registry), nodes: onlineNodes(registry), tools: onlineTools(registry) };
    const { plan, summary } = resumed ?? (await planRequest(req, online, t, llm, untilDeadline(deadlineAt)));
    leadership.fence();
    if (resumed) log.info("Request resumed", { request: req.request, previous_coordinator: record?.coordinator, tasks: plan.tasks.length });
    else {
      events.tell(req.request, { kind: "planned", plan: summary });
      log.info("Request planned", {
        request: req.request,
        planner: summary.planner,
        tasks: plan.tasks.map((x) => `${x.id}:${x.capability}`).join(","),
      });
    }
    const base: RequestRecord = {
      v: 1,
      status: "running",
      coordinator: me,
      lease: leadership.revision(),
      started_at: record?.started_at ?? started,
      deadline_at: deadlineAt,
      plan,
      summary,
      queued: { ...record?.queued },
      resumed: record?.resumed && { ...record.resumed },
    };
    let recorded = Promise.resolve();
    // The record goes with each wave of queued sub-tasks (their stream sequences), so a resume neither
    // loses nor repeats one; a plan that queues nothing yet is recorded at once.
    const run = runRequest(
      {
        js: ctx.giveUp.js,
        jsm: node.jsm,
        kv,
        names: node.names,
        log,
        coordinator: me,
        defaultTimeoutMs: t.timeout,
        deadlineAt,
        maxDeliver: t.max_deliver,
        ackWaitMs: t.ack_wait,
        nodeTimeoutMs: cfg.swarm.nats.node_timeout,
        onlineFor: (capability, tools) =>
          tools?.length
            ? nodesWithTools(node.membership.registry, capability, tools).length
            : (onlineCapabilities(node.membership.registry).get(capability) ?? 0),
        nodesWithTools: (capability, tools, exclude) => nodesWithTools(node.membership.registry, capability, tools, exclude),
        fence: leadership.fence,
        whileLeading,
        onQueued: (seqs, resumedFrom) => {
          // One write at a time, each with every sequence known so far.
          Object.assign(base.queued!, seqs);
          if (resumedFrom) base.resumed = { ...base.resumed, ...resumedFrom };
          const snapshot = { ...base, queued: { ...base.queued }, resumed: base.resumed && { ...base.resumed } };
          recorded = recorded.then(() => whileLeading("record the request", () => writeRequest(kv, req.request, snapshot, records)));
          return recorded;
        },
        recordFailure: (task, error, attempts) => recordFailure(ctx.giveUp, task, error, attempts),
        signer: ctx.signer,
        checkResult: ctx.checkResult,
        records,
        // No request event: the node's own `started` task event already tells followers.
        onAssigned: (task, n) =>
          log.info("Task assigned", { task, request: req.request, node: n, capability: plan.tasks.find((x) => x.id === task)?.capability }),
        maxTokens: t.max_tokens_per_request,
        spentTokens: summary.usage?.total_tokens,
        approvals: ctx.approvals && {
          read: ctx.approvals.read,
          decided: (task, d) => ctx.approvals?.decided(req.request, task, d),
          expired: (task, ids) => ctx.approvals?.expired(req.request, task, ids),
        },
      },
      req.request,
      plan,
      resumed ? { queued: record?.queued, resumed: record?.resumed } : undefined,
    );
    mine.run = run;
    busy.delete(req.request); // waiting on the swarm holds no slot
    node.membership.heartbeatNow();
    const outcomes = await run.outcomes;

    busy.add(req.request);
    const input = {
      request: req.request,
      requestText: req.text,
      plan: summary,
      outcomes,
      durationMs: Date.now() - base.started_at,
      stopped: run.stopped(),
    };
    const answer = await answerFor(input, llm, base.started_at, {
      signal: untilDeadline(deadlineAt + t.timeout),
      expired: run.expired(),
      coordinator: me,
      tell: (ev) => events.tell(req.request, ev),
    });
    const stored = await whileLeading("store the answer", () => storeLargeAnswer(node.link.nc, node.names, cfg, req.request, answer));
    // A "running" record still on its way must land before the answered one, not over it.
    await recorded;
    await answerRequest({ kv, leadership, events, whileLeading, records }, msg, req.request, base, stored);
    ctx.answered.inc({ status: answer.status ?? "completed" });
    log.info("Request answered", {
      request: req.request,
      status: answer.status,
      tasks: outcomes.length,
      duration_ms: answer.duration_ms,
      tokens: answer.usage?.total_tokens,
      error: answer.error,
    });
  } catch (err) {
    await ended(ctx, msg, req, started, err);
  } finally {
    clearInterval(keepAlive);
    open.delete(req.request);
    busy.delete(req.request);
    node.membership.heartbeatNow();
  }
}

/** A request that could not be answered normally: rejected, handed over, retried later, or dead-lettered. */
async function ended(ctx: RequestContext, msg: JsMsg, req: RequestMsg, started: number, err: unknown): Promise<void> {
  const { kv, leadership, events, whileLeading, records, answered } = ctx;
  const { log } = ctx.node;
  const me = ctx.node.identity.node;
  const finish = (kind: "failed", error: string) =>
    answerRequest(
      { kv, leadership, events, whileLeading, records },
      msg,
      req.request,
      { v: 1, status: "running", coordinator: me, lease: leadership.revision(), started_at: started },
      { kind, error, duration_ms: Date.now() - started },
    );
  if (err instanceof PlanError) {
    log.warn("Request rejected", { request: req.request, error: err.message });
    answered.inc({ status: "rejected" });
    return finish("failed", err.message).catch(() => msg.nak(1_000));
  }
  if (err instanceof StaleLeaderError) {
    log.warn("Request handed back", { request: req.request, reason: err.message });
    return msg.nak(); // the new leader takes it at once
  }
  const error = (err as Error)?.message ?? String(err);
  const failures = await countFailure(kv, req.request, records).catch(() => 0);
  if (failures >= MAX_REQUEST_FAILURES) {
    // It keeps failing: answered as failed, kept as a dead letter, never redelivered for ever.
    log.error("Request failed for good; kept as a dead letter", { request: req.request, failures, error });
    answered.inc({ status: "dead" });
    await writeDeadLetter(kv, {
      v: 1,
      request: req.request,
      text: req.text.slice(0, 1_000),
      error,
      failures,
      at: Date.now(),
      coordinator: me,
    })
      .then(() => finish("failed", `gave up after ${failures} failed attempts to handle it: ${error}`))
      .catch(() => msg.nak(5_000));
    return;
  }
  const delay = backoffDelay(failures, TASK_BACKOFF);
  log.warn("Request handling failed; it will be retried", { request: req.request, failures, retry_in_ms: delay, error });
  msg.nak(delay);
}

/** An abort signal for work that must not outlast `deadlineAt` (planning and synthesis LLM calls). */
function untilDeadline(deadlineAt: number): AbortSignal {
  return AbortSignal.timeout(Math.max(1, deadlineAt - Date.now()));
}
