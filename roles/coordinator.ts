#!/usr/bin/env bun
// The coordinator: take the lease (one leads, the others stand by), take requests while leading, plan
// each into sub-tasks, run them on the nodes that have the capabilities, synthesize one answer, and
// answer exactly once. Every request ends: by its answer, by its deadline, or, when handling it keeps
// failing, as a dead letter. A request whose leader died is redelivered to the next leader, which
// resumes it from the recorded plan and results.
import type { JsMsg } from "nats";
import { storeLargeAnswer } from "../lib/answers.ts";
import { acceptWorkItem } from "../lib/bad-input.ts";
import { runEntry } from "../lib/cli.ts";
import { nodeLlm } from "../lib/llm.ts";
import { createLogger } from "../lib/log.ts";
import { decode } from "../lib/messages.ts";
import { type MemberNode, serveMember } from "../lib/node.ts";
import { PlanError } from "../lib/plan.ts";
import { onlineCapabilities, onlineNodes } from "../lib/registry.ts";
import { backoffDelay, TASK_BACKOFF } from "../lib/retry.ts";
import { loadSigner, verifyResult } from "../lib/signing.ts";
import { ensureConsumer, openTasksKv } from "../lib/streams.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type RequestMsg, requestSchema, type TaskResult, taskEventSchema } from "../lib/task-messages.ts";
import { countFailure, type RequestRecord, readRequest, writeDeadLetter, writeRequest } from "../lib/task-records.ts";
import { temporalSettings } from "../lib/temporal.ts";
import { answerRequest, coordinatorRecords, requestEvents } from "./coordinator/answer.ts";
import { failExhaustedSubTasks, recordFailure } from "./coordinator/give-up.ts";
import { type Intake, takeRequests } from "./coordinator/intake.ts";
import { StaleLeaderError, startLeadership } from "./coordinator/leadership.ts";
import { planRequest, plansWithLlm } from "./coordinator/planner.ts";
import { type RequestRun, runRequest } from "./coordinator/request-run.ts";
import { sweepDirectQueues } from "./coordinator/sweep.ts";
import { answerFor } from "./coordinator/synthesis.ts";
import { subTaskWaiters } from "./coordinator/waiters.ts";
import { retryWhileLeading } from "./coordinator/while-leading.ts";

/** Handling a request that fails this often (not counting hand-overs) makes it a dead letter. */
const MAX_REQUEST_FAILURES = 3;
/** Requests waiting on their sub-tasks hold no slot, but there are at most this many per slot. */
const OPEN_PER_SLOT = 100;

export async function runCoordinator(node: MemberNode): Promise<void> {
  const { config: cfg, log, names, bad } = node;
  const t = cfg.swarm.tasks;
  const nc = node.link.nc;
  const js = nc.jetstream();
  const me = node.identity.node;
  const llm = await nodeLlm(node);
  const answered = node.metrics.counter(
    "picoclaw_requests_total",
    "Requests this coordinator ended, by status (completed, partial, failed, rejected, dead).",
  );
  const signer = loadSigner(cfg, "trusted_workers", log);
  const kv = await node.startUp("open the tasks bucket", () => openTasksKv(nc, names, cfg));
  const events = requestEvents(nc, js, names, me, signer);
  // Results are trusted from the configured workers, and from this coordinator (sub-tasks it gave up on).
  const trustedResultKeys = new Set([...cfg.swarm.security.trusted_workers, ...(signer ? [signer.publicKey] : [])]);
  const records = coordinatorRecords(node, signer);
  /** Requests being planned or synthesized: each holds one of max_concurrent slots. */
  const busy = new Set<string>();
  /** Every request this coordinator handles, waiting on sub-tasks or not. */
  const open = new Map<string, { run?: RequestRun }>();
  const handling = new Set<Promise<void>>();
  let intake: Intake | undefined;
  // Ack wait = lease TTL: a dead leader's request reaches the next leader about when it takes over.
  await node.startUp("create the request consumer", () =>
    ensureConsumer(node.jsm, names.streams.requests, names.consumers.requests, names.requestSubmit, {
      ackWait: cfg.swarm.lease_ttl,
      maxDeliver: -1,
    }),
  );

  // 1. Take the lease. Stepping down stops following every request: the next leader gets them redelivered.
  const leadership = await node.startUp("open the leader bucket", () =>
    startLeadership({
      nc,
      names,
      node: me,
      ttlMs: cfg.swarm.lease_ttl,
      replicas: cfg.swarm.nats.replicas,
      log,
      onChange: (leading) => {
        if (leading) return intake?.wake();
        for (const r of open.values()) r.run?.abandon(new StaleLeaderError("stepped down"));
      },
    }),
  );
  const whileLeading = retryWhileLeading(leadership, log, 3 * cfg.swarm.lease_ttl);
  const giveUp = { js, kv, names, node: me, signer };
  const checkResult = signer ? (r: TaskResult) => verifyResult(r, trustedResultKeys) : undefined;

  // Temporal mode (swarm.temporal.address reachable): requests run as workflows, which this coordinator's
  // worker runs alongside every other coordinator's; without it, or while it is away, the JetStream path.
  const waiters = subTaskWaiters();
  const settings = temporalSettings(cfg);
  // Loaded only when configured: nodes without Temporal never load its SDK.
  const temporal = settings
    ? await (await import("./coordinator/temporal/runner.ts")).startTemporal(settings, {
        identity: me,
        log,
        maxActivities: Math.max(100, cfg.swarm.max_concurrent * OPEN_PER_SLOT),
        activities: (await import("./coordinator/temporal/activities.ts")).requestActivities({
          ...{ nc, js, jsm: node.jsm, kv, names, cfg, log, llm, me, events, giveUp, waiters, signer, checkResult, records },
          registry: () => node.membership.registry,
          discovered: node.membership.discovered,
          onAnswered: (status) => answered.inc({ status }),
        }),
      })
    : undefined;

  // 2. Follow the sub-tasks of the requests we run; fail those that used up their deliveries.
  const subs = [
    nc.subscribe(names.taskEventsAll, {
      callback: (_e, msg) => {
        const d = decode(taskEventSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
        if (!d.ok) return bad.record(msg.subject, d.reason);
        // Workflow activities wait on any coordinator, leader or not.
        waiters.onTaskEvent(d.value);
        // A coordinator waking from a pause may find events queued: once it no longer leads, they are
        // the new leader's to act on.
        if (leadership.holds()) open.get(d.value.request)?.run?.onTaskEvent(d.value);
      },
    }),
    failExhaustedSubTasks({ ...node, ...giveUp, nc, maxDeliver: t.max_deliver, leading: leadership.holds }),
  ];
  node.onPeerEvent((e) => {
    // A node gone, by crash or by leave: what was pinned to it goes to its capability's queue.
    if (e.kind === "offline" || e.kind === "left") for (const r of open.values()) r.run?.onNodeOffline(e.peer.info.node);
  });
  // The direct queues of nodes that are gone (a crash leaves one behind each time).
  const nodeTimeout = cfg.swarm.nats.node_timeout;
  const sweeper = setInterval(
    () => {
      if (!leadership.holds()) return;
      sweepDirectQueues({ jsm: node.jsm, names, registry: node.membership.registry, minAgeMs: 2 * nodeTimeout, log }).catch((err) =>
        log.debug("Direct queues not swept", { error: (err as Error).message }),
      );
    },
    Math.max(5_000, 3 * nodeTimeout),
  );

  // 3. Take requests while leading and a slot is free.
  intake = takeRequests({
    nc,
    names,
    maxConcurrent: cfg.swarm.max_concurrent,
    leading: leadership.holds,
    active: () => (open.size >= cfg.swarm.max_concurrent * OPEN_PER_SLOT ? Number.POSITIVE_INFINITY : busy.size),
    handle(msg) {
      const h = handle(msg).finally(() => {
        handling.delete(h);
        intake?.wake();
      });
      handling.add(h);
    },
  });

  node.ready({
    // A coordinator's load is the requests it is planning or synthesizing now.
    load: () => ({
      running: busy.size,
      temporal: temporal && { address: temporal.address, polling: temporal.polling(), ...temporal.counts() },
    }),
    async stop() {
      await intake?.stop();
      await temporal?.stop();
      // Hand unfinished requests back (nak): a standby resumes them now, or the next coordinator later.
      for (const r of open.values()) r.run?.abandon(new StaleLeaderError("coordinator stopping"));
      await Promise.all(handling);
      for (const s of subs) s.unsubscribe();
      clearInterval(sweeper);
      await leadership.stop();
    },
  });

  // 4. One request: plan it (or resume its recorded plan), run its sub-tasks, synthesize, answer.
  async function handle(msg: JsMsg): Promise<void> {
    const req = acceptWorkItem(msg, requestSchema, bad);
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
      const online = { capabilities: onlineCapabilities(registry), nodes: onlineNodes(registry) };
      const { plan, summary } = resumed ?? (await planRequest(req, online, t, llm, untilDeadline(deadlineAt)));
      leadership.fence();
      if (resumed)
        log.info("Request resumed", { request: req.request, previous_coordinator: record?.coordinator, tasks: plan.tasks.length });
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
      };
      let recorded = Promise.resolve();
      // The record goes with each wave of queued sub-tasks (their stream sequences), so a resume neither
      // loses nor repeats one; a plan that queues nothing yet is recorded at once.
      const run = runRequest(
        {
          js,
          jsm: node.jsm,
          kv,
          names,
          log,
          coordinator: me,
          defaultTimeoutMs: t.timeout,
          deadlineAt,
          maxDeliver: t.max_deliver,
          ackWaitMs: t.ack_wait,
          nodeTimeoutMs: cfg.swarm.nats.node_timeout,
          onlineFor: (capability) => onlineCapabilities(node.membership.registry).get(capability) ?? 0,
          fence: leadership.fence,
          onQueued: (seqs) => {
            // One write at a time, each with every sequence known so far.
            Object.assign(base.queued!, seqs);
            const snapshot = { ...base, queued: { ...base.queued } };
            recorded = recorded.then(() => whileLeading("record the request", () => writeRequest(kv, req.request, snapshot, records)));
            return recorded;
          },
          recordFailure: (task, error, attempts) => recordFailure(giveUp, task, error, attempts),
          signer,
          checkResult,
          records,
          // No request event: the node's own `started` task event already tells followers.
          onAssigned: (task, n) =>
            log.info("Task assigned", {
              task,
              request: req.request,
              node: n,
              capability: plan.tasks.find((x) => x.id === task)?.capability,
            }),
          maxTokens: t.max_tokens_per_request,
          spentTokens: summary.usage?.total_tokens,
        },
        req.request,
        plan,
        resumed ? { queued: record?.queued } : undefined,
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
      const stored = await whileLeading("store the answer", () => storeLargeAnswer(nc, names, cfg, req.request, answer));
      await answerRequest({ kv, leadership, events, whileLeading, records }, msg, req.request, base, stored);
      answered.inc({ status: answer.status ?? "completed" });
      log.info("Request answered", {
        request: req.request,
        status: answer.status,
        tasks: outcomes.length,
        duration_ms: answer.duration_ms,
        tokens: answer.usage?.total_tokens,
        error: answer.error,
      });
    } catch (err) {
      await ended(msg, req, started, err);
    } finally {
      clearInterval(keepAlive);
      open.delete(req.request);
      busy.delete(req.request);
      node.membership.heartbeatNow();
    }
  }

  /** A request that could not be answered normally: rejected, handed over, retried later, or dead-lettered. */
  async function ended(msg: JsMsg, req: RequestMsg, started: number, err: unknown): Promise<void> {
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
}

/** An abort signal for work that must not outlast `deadlineAt` (planning and synthesis LLM calls). */
function untilDeadline(deadlineAt: number): AbortSignal {
  return AbortSignal.timeout(Math.max(1, deadlineAt - Date.now()));
}

if (import.meta.main) {
  process.exit(
    await runEntry(process.argv.slice(2), {
      name: "picoclaw-coordinator",
      role: "coordinator",
      usage: "run a coordinator node: takes requests while it holds the lease, plans, routes, synthesizes",
      run: (_cli, { config }) => serveMember(config, createLogger(config.log.level), runCoordinator),
    }),
  );
}
