// The request workflow's steps, run by the Temporal worker inside every coordinator. Each works on NATS
// exactly as the JetStream path does (records, queues, events), and each is safe to run again on another
// coordinator after a failover: planning reuses a recorded plan, a sub-task whose result is recorded or
// whose message is still queued is not published again, an answer already recorded is sent again as is.
import { Context } from "@temporalio/activity";
import type { JetStreamClient, JetStreamManager, KV, NatsConnection } from "nats";
import { storeLargeAnswer } from "../../../lib/answers.ts";
import type { Config } from "../../../lib/config.ts";
import { createDoorbell } from "../../../lib/doorbell.ts";
import type { LlmProvider } from "../../../lib/llm-types.ts";
import type { Logger } from "../../../lib/log.ts";
import { encode } from "../../../lib/messages.ts";
import { PlanError, titleOf } from "../../../lib/plan.ts";
import type { RecordGuard } from "../../../lib/record-guard.ts";
import { nodesWithTools, onlineCapabilities, onlineNodes, onlineTools, type Registry } from "../../../lib/registry.ts";
import { type Signer, signMessage, type Verdict } from "../../../lib/signing.ts";
import type { SwarmNames } from "../../../lib/subjects.ts";
import type { TaskEvent, TaskMsg, TaskResult } from "../../../lib/task-messages.ts";
import { type RequestRecord, readRequest, readResult, writeRequest } from "../../../lib/task-records.ts";
import type { RequestEvents } from "../answer.ts";
import type { CoordinatorApprovals } from "../approvals.ts";
import { type GiveUpOptions, recordFailure, rejectedResult } from "../give-up.ts";
import { taskInputs } from "../inputs.ts";
import { planRequest, plansWithLlm } from "../planner.ts";
import { lastStoredEvent, stuck, type Watched } from "../stuck.ts";
import type { SubTaskOutcome } from "../synthesis.ts";
import { answerFor } from "../synthesis.ts";
import type { SubTaskWaiters } from "../waiters.ts";
import type { Answered, AnswerInput, Planned, RequestActivities, RequestInput, SubTaskEnd, SubTaskParked } from "./types.ts";

export interface ActivityContext {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  kv: KV;
  names: SwarmNames;
  cfg: Config;
  log: Logger;
  llm: LlmProvider;
  me: string;
  events: RequestEvents;
  giveUp: GiveUpOptions;
  registry(): Registry;
  discovered: Promise<void>;
  waiters: SubTaskWaiters;
  signer?: Signer;
  checkResult?: (r: TaskResult) => Verdict;
  /** How records read back from KV are checked (schema; with signing on, request records' seals) and reported. */
  records?: RecordGuard;
  /** A request ended (answered, failed or rejected) on this coordinator. */
  onAnswered(status: string): void;
  /** Decisions on the calls of parked sub-tasks, and their audit trail (events, metrics). */
  approvals?: Omit<CoordinatorApprovals, "stop">;
}

/** The parking a node stored or said (its calls wait for a person), as the workflow gets it back. */
function parkedFrom(task: string, ev: { node?: string; approvals?: TaskEvent["approvals"]; seq?: number }): SubTaskParked | undefined {
  const calls = ev.approvals ?? [];
  if (calls.length === 0 || ev.seq === undefined) return undefined;
  return {
    id: task,
    status: "parked",
    approvals: calls.map((a) => a.id),
    tools: [...new Set(calls.map((a) => a.tool))],
    node: ev.node ?? "",
    expires_at: Math.min(...calls.map((a) => a.expires_at)),
    parking: ev.seq,
  };
}

/** How often a waiting sub-task activity looks at the stored state, and heartbeats to Temporal. */
const CHECK_EVERY_MS = 1_000;

export function requestActivities(c: ActivityContext): RequestActivities {
  const t = c.cfg.swarm.tasks;

  const record = async (request: string) => {
    const r = await readRequest(c.kv, request, c.records);
    if (!r?.plan) throw new Error(`request ${request} has no recorded plan`);
    return r as RequestRecord & Required<Pick<RequestRecord, "plan" | "summary">>;
  };

  return {
    async plan(input: RequestInput): Promise<Planned> {
      const { msg } = input;
      const existing = await readRequest(c.kv, msg.request, c.records);
      // Planned before (this is a retry on another coordinator): the recorded plan, not a new one.
      if (existing?.plan) return { tasks: existing.plan.tasks.map(planned) };
      if (plansWithLlm({ explicit: msg.plan, capabilities: msg.capabilities, llm: c.llm }))
        c.events.tell(msg.request, { kind: "accepted" });
      await c.discovered;
      const reg = c.registry();
      try {
        const online = { capabilities: onlineCapabilities(reg), nodes: onlineNodes(reg), tools: onlineTools(reg) };
        const { plan, summary } = await planRequest(msg, online, t, c.llm);
        const base: RequestRecord = {
          v: 1,
          status: "running",
          coordinator: c.me,
          lease: 0,
          started_at: Date.now(),
          deadline_at: input.deadline_at,
          plan,
          summary,
          queued: {},
          text: msg.text,
        };
        await writeRequest(c.kv, msg.request, base, c.records);
        c.events.tell(msg.request, { kind: "planned", plan: summary });
        c.log.info("Request planned", {
          request: msg.request,
          planner: summary.planner,
          tasks: plan.tasks.map((x) => `${x.id}:${x.capability}`).join(","),
          workflow: true,
        });
        return { tasks: plan.tasks.map(planned) };
      } catch (err) {
        if (err instanceof PlanError) return { rejected: err.message };
        throw err;
      }
    },

    async decided({ ids }) {
      for (const id of ids) {
        const d = await c.approvals?.read(id);
        if (d) return { id: d.id, outcome: d.outcome };
      }
      return undefined;
    },

    async runSubTask({ request, task, deadline_at, resume }): Promise<SubTaskEnd | SubTaskParked> {
      const ctx = Context.current();
      const done = await readResult(c.kv, request, task, c.records);
      if (done) return ended(task, done, c.checkResult);
      const rec = await record(request);
      const t0 = rec.plan.tasks.find((x) => x.id === task);
      if (!t0) throw new Error(`request ${request} has no sub-task ${task}`);
      // Listen before publishing: a fast node's `completed` event must not come before we do.
      const watch: Watched = { capability: t0.capability, tools: t0.tools, pinned: false };
      const listeningSince = Date.now();
      const bell = createDoorbell();
      /** A node said it parked the sub-task: its stored event says which parking (each is answered once). */
      let heardParking = false;
      const answered = resume?.parked.parking ?? 0; // the parking this run answers is history
      let lookedAt = 0;
      const stopWaiting = c.waiters.wait(request, task, (ev) => {
        watch.last = { kind: ev.kind, attempt: ev.attempt, at: Date.now() }; // heard now, whatever it claims
        if (ev.kind === "started") c.log.info("Task assigned", { task, request, node: ev.node, capability: ev.capability });
        if (ev.kind === "approval") heardParking = true;
        if (ev.kind === "completed" || ev.kind === "failed" || ev.kind === "duplicate" || ev.kind === "approval") bell.ring();
      });
      try {
        // A retry (this coordinator or another): the copy queued by the last attempt may still be there.
        const previous = (ctx.info.heartbeatDetails as { seq?: number } | undefined)?.seq;
        let seq: number | undefined = previous !== undefined && (await stillQueued(c, previous)) ? previous : undefined;
        /** Queues the sub-task; `resume`: again after a decision, to that node, to go on from its steps. */
        const publish = async (resume?: { node: string; cause: string }): Promise<number> => {
          const deps = await Promise.all(
            t0.depends_on.map(async (id) => ({
              task: rec.plan.tasks.find((x) => x.id === id)!,
              result: await readResult(c.kv, request, id, c.records),
            })),
          );
          const msg: TaskMsg = {
            v: 1,
            request,
            task,
            title: titleOf(t0),
            capability: t0.capability,
            priority: t0.priority,
            prompt: t0.prompt,
            inputs: taskInputs(deps),
            timeout_ms: t0.timeout_ms ?? t.timeout,
            coordinator: c.me,
            deadline_at,
            tools: t0.tools,
            resume: resume ? true : undefined,
          };
          // A sub-task that needs tools goes to a node that has them (the plan was checked against the
          // online tools; should that node be gone now, the capability queue, and the stuck check decides).
          const target = resume?.node ?? (t0.tools?.length ? nodesWithTools(c.registry(), t0.capability, t0.tools)[0] : undefined);
          const subject = target ? c.names.taskDirect(target) : c.names.taskQueue(t0.capability, t0.priority);
          const payload = encode(msg);
          const msgID = `${request}.${task}${resume ? `.${resume.cause}` : ""}`;
          const ack = await c.js.publish(subject, payload, {
            msgID,
            headers: c.signer ? signMessage(c.signer, subject, payload, msgID) : undefined,
          });
          return ack.seq;
        };
        if (resume && seq === undefined) {
          const node = await resumeTarget(c, { request, task, capability: t0.capability }, resume, ctx);
          seq = await publish({ node, cause: `resume-${resume.parked.parking}` });
        }
        seq ??= await publish();
        ctx.heartbeat({ seq });

        // Wait for the result: the node's `completed`/`failed` event brings it at once; the stored state is
        // read every second as well (events can be missed), and tells when nobody will ever finish it.
        try {
          for (;;) {
            const r = await readResult(c.kv, request, task, c.records);
            if (r) return ended(task, r, c.checkResult);
            // Heard parking it, or silent longer than a running node's progress interval (the live word of
            // a parking may have missed us): the stored events say whether, and which parking.
            const now = Date.now();
            const quiet = t.ack_wait / 2;
            if (heardParking || (now - (watch.last?.at ?? 0) > quiet && now - lookedAt > quiet) || watch.last === undefined) {
              heardParking = false;
              lookedAt = now;
              const stored = await lastStoredEvent(c.jsm, c.names, request, task, listeningSince);
              const parked = stored?.kind === "approval" && (stored.seq ?? 0) > answered ? parkedFrom(task, stored) : undefined;
              if (parked) {
                c.log.info("Task parked: waiting for approval", {
                  ...{ task, request, node: parked.node, approvals: parked.approvals.join(",") },
                  workflow: true,
                });
                return parked;
              }
              if (stored?.kind !== "approval") watch.last ??= stored;
            }
            const limits = {
              onlineFor: (cap: string, tools?: string[]) =>
                tools?.length ? nodesWithTools(c.registry(), cap, tools).length : (onlineCapabilities(c.registry()).get(cap) ?? 0),
              nodeTimeoutMs: c.cfg.swarm.nats.node_timeout,
              maxDeliver: t.max_deliver,
              ackWaitMs: t.ack_wait,
            };
            const why = stuck(watch, limits, Date.now());
            if (why) {
              const failed = await recordFailure(c.giveUp, { request, task, capability: t0.capability }, why.error, why.attempts);
              await c.jsm.streams.deleteMessage(c.names.streams.tasks, seq).catch(() => {});
              if (failed) c.log.warn("Task failed", { task, request, attempts: why.attempts, error: why.error });
              continue; // read back whichever outcome was recorded first
            }
            await Promise.race([bell.wait(CHECK_EVERY_MS), ctx.cancelled]);
            ctx.heartbeat({ seq });
          }
        } catch (err) {
          // Cancelled (the request's deadline): the queued copy goes too, so no node starts it any more.
          await c.jsm.streams.deleteMessage(c.names.streams.tasks, seq).catch(() => {});
          throw err;
        }
      } finally {
        stopWaiting();
      }
    },

    async answer({ request, ends, expired }: AnswerInput): Promise<Answered> {
      const rec = await record(request);
      if (rec.status === "answered" && rec.answer) {
        await c.events.publishAnswer(request, rec.answer);
        return { status: rec.answer.status ?? "failed" };
      }
      const outcomes: SubTaskOutcome[] = await Promise.all(
        rec.plan.tasks.map(async (pt) => {
          const end = ends.find((e) => e.id === pt.id);
          const recorded = end?.status === "skipped" ? undefined : await readResult(c.kv, request, pt.id, c.records);
          const verdict = recorded && c.checkResult?.(recorded);
          const result = recorded && verdict && !verdict.ok ? rejectedResult(recorded, verdict.reason) : recorded;
          return {
            id: pt.id,
            title: titleOf(pt),
            capability: pt.capability,
            required: pt.required,
            result,
            skipped: result ? undefined : (end?.reason ?? "not run"),
          };
        }),
      );
      const input = { request, requestText: rec.text ?? "", plan: rec.summary, outcomes, durationMs: Date.now() - rec.started_at };
      const answer = await answerFor(input, c.llm, rec.started_at, {
        expired,
        signal: AbortSignal.timeout(t.timeout),
        coordinator: c.me,
        tell: (ev) => c.events.tell(request, ev),
      });
      const stored = await storeLargeAnswer(c.nc, c.names, c.cfg, request, answer);
      // Recorded before it is published: a retry sends the same answer, never a second synthesis.
      await writeRequest(c.kv, request, { ...rec, status: "answered", answer: stored }, c.records);
      await c.events.publishAnswer(request, stored);
      c.onAnswered(answer.status ?? "completed");
      c.log.info("Request answered", {
        request,
        status: answer.status,
        tasks: outcomes.length,
        duration_ms: answer.duration_ms,
        tokens: answer.usage?.total_tokens,
        workflow: true,
      });
      return { status: answer.status ?? "completed" };
    },

    async reject({ request, error }): Promise<Answered> {
      const ev = { kind: "failed" as const, error, duration_ms: 0 };
      const existing = await readRequest(c.kv, request, c.records);
      await writeRequest(
        c.kv,
        request,
        {
          v: 1,
          status: "answered",
          coordinator: c.me,
          lease: 0,
          started_at: existing?.started_at ?? Date.now(),
          answer: ev,
        },
        c.records,
      );
      await c.events.publishAnswer(request, ev);
      c.onAnswered("rejected");
      c.log.warn("Request rejected", { request, error, workflow: true });
      return { status: "rejected" };
    },
  };
}

function planned(t: { id: string; capability: string; depends_on: string[]; required: boolean }) {
  return { id: t.id, capability: t.capability, depends_on: t.depends_on, required: t.required };
}

function ended(task: string, r: TaskResult, check?: (r: TaskResult) => Verdict): SubTaskEnd {
  const verdict = check?.(r);
  if (verdict && !verdict.ok) return { id: task, status: "failed", reason: `result rejected: ${verdict.reason}` };
  return { id: task, status: r.status };
}

async function stillQueued(c: ActivityContext, seq: number): Promise<boolean> {
  return c.jsm.streams.getMessage(c.names.streams.tasks, { seq }).then(
    () => true,
    () => false,
  );
}

/**
 * Where a parked sub-task goes once its calls are decided (or timed out): the node that asked when it
 * is online with the tools, else another that has them; while none is, this waits (the request's
 * deadline cancels it). The decision is counted here, once per resume.
 */
async function resumeTarget(
  c: ActivityContext,
  at: { request: string; task: string; capability: string },
  resume: { cause: string; parked: SubTaskParked },
  ctx: Context,
): Promise<string> {
  const { parked } = resume;
  if (resume.cause.endsWith(".expired")) c.approvals?.expired(at.request, at.task, parked.approvals);
  else {
    const d = await c.approvals?.read(resume.cause);
    if (d) c.approvals?.decided(at.request, at.task, d);
  }
  for (let said = false; ; said = true) {
    const nodes = nodesWithTools(c.registry(), at.capability, parked.tools);
    const node = nodes.includes(parked.node) ? parked.node : nodes[0];
    if (node) return node;
    if (!said) c.log.info("Decided call waits for a node with its tools", { ...at, tools: parked.tools.join(","), workflow: true });
    await Promise.race([Bun.sleep(CHECK_EVERY_MS), ctx.cancelled]);
    ctx.heartbeat({ resume: resume.cause });
  }
}
