#!/usr/bin/env bun
// The coordinator: take the lease (one leads, the others stand by), take requests while leading, plan
// each into sub-tasks, run them on the nodes that have the capabilities, synthesize one answer, and
// answer exactly once. A request whose leader died is redelivered to the next leader, which resumes it
// from the recorded plan and results; one already answered is answered again from its record.
import type { JsMsg } from "nats";
import { acceptWorkItem } from "../lib/bad-input.ts";
import { runEntry } from "../lib/cli.ts";
import { nodeLlm } from "../lib/llm.ts";
import { createLogger } from "../lib/log.ts";
import { decode } from "../lib/messages.ts";
import { type MemberNode, serveMember } from "../lib/node.ts";
import { PlanError } from "../lib/plan.ts";
import { onlineCapabilities, onlineNodes } from "../lib/registry.ts";
import { loadSigner, verifyResult } from "../lib/signing.ts";
import { ensureConsumer, openTasksKv } from "../lib/streams.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, requestSchema, taskEventSchema } from "../lib/task-messages.ts";
import { type RequestRecord, readRequest, writeRequest } from "../lib/task-records.ts";
import { answerRequest, requestEvents } from "./coordinator/answer.ts";
import { failExhaustedSubTasks } from "./coordinator/exhausted.ts";
import { type Intake, takeRequests } from "./coordinator/intake.ts";
import { StaleLeaderError, startLeadership } from "./coordinator/leadership.ts";
import { planRequest, plansWithLlm } from "./coordinator/planner.ts";
import { type RequestRun, runRequest } from "./coordinator/request-run.ts";
import { answerFor } from "./coordinator/synthesis.ts";

export async function runCoordinator(node: MemberNode): Promise<void> {
  const { config: cfg, log, names, bad } = node;
  const nc = node.link.nc;
  const js = nc.jetstream();
  const me = node.identity.node;
  const llm = await nodeLlm(cfg.llm, log, node.metrics);
  const requestsDone = node.metrics.counter(
    "picoclaw_requests_total",
    "Requests this coordinator answered, by status (completed, partial, failed, rejected).",
  );
  const signer = loadSigner(cfg, "trusted_workers", log);
  const kv = await openTasksKv(nc, names, cfg);
  const events = requestEvents(nc, js, names, me);
  // Results are trusted from the configured workers, and from this coordinator (poison sub-tasks).
  const trustedResultKeys = new Set([...cfg.swarm.security.trusted_workers, ...(signer ? [signer.publicKey] : [])]);
  /** Requests being handled (planning included), and the runs of those whose sub-tasks are out. */
  const active = new Set<string>();
  const runs = new Map<string, RequestRun>();
  const handling = new Set<Promise<void>>();
  let intake: Intake | undefined;
  // Ack wait = lease TTL: a dead leader's request reaches the next leader about when it takes over.
  await ensureConsumer(node.jsm, names.streams.requests, names.consumers.requests, names.requestSubmit, {
    ackWait: cfg.swarm.lease_ttl,
    maxDeliver: -1,
  });

  // 1. Take the lease. Stepping down stops following every request: the next leader gets them redelivered.
  const leadership = await startLeadership({
    nc,
    names,
    node: me,
    ttlMs: cfg.swarm.lease_ttl,
    replicas: cfg.swarm.nats.replicas,
    log,
    onChange: (leading) => {
      if (leading) return intake?.wake();
      for (const run of runs.values()) run.abandon(new StaleLeaderError("stepped down"));
    },
  });

  // 2. Follow the sub-tasks of the requests we run; fail those that used up their deliveries.
  const subs = [
    nc.subscribe(names.taskEventsAll, {
      callback: (_e, msg) => {
        const d = decode(taskEventSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
        if (!d.ok) return bad.record(msg.subject, d.reason);
        // A coordinator waking from a pause may find events queued: once it no longer leads, they are
        // the new leader's to act on.
        if (leadership.holds()) runs.get(d.value.request)?.onTaskEvent(d.value);
      },
    }),
    failExhaustedSubTasks({ ...node, nc, js, kv, node: me, maxDeliver: cfg.swarm.tasks.max_deliver, signer, leading: leadership.holds }),
  ];
  node.onPeerEvent((e) => {
    if (e.kind === "offline") for (const run of runs.values()) run.onNodeOffline(e.peer.info.node);
  });

  // 3. Take requests while leading, at most max_concurrent at once.
  intake = takeRequests({
    nc,
    names,
    maxConcurrent: cfg.swarm.max_concurrent,
    leading: leadership.holds,
    active: () => active.size,
    handle(msg) {
      const h = handle(msg).finally(() => {
        handling.delete(h);
        intake?.wake();
      });
      handling.add(h);
    },
  });

  node.ready({
    // A coordinator's load is the requests it coordinates.
    load: () => ({ running: active.size }),
    async stop() {
      await intake?.stop();
      // Hand unfinished requests back (nak): a standby resumes them now, or the next coordinator later.
      for (const run of runs.values()) run.abandon(new StaleLeaderError("coordinator stopping"));
      await Promise.all(handling);
      for (const s of subs) s.unsubscribe();
      await leadership.stop();
    },
  });

  // 4. One request: plan it (or resume its recorded plan), run its sub-tasks, synthesize, answer.
  async function handle(msg: JsMsg): Promise<void> {
    const req = acceptWorkItem(msg, requestSchema, bad);
    if (!req || active.has(req.request)) return; // a redelivery of one we handle is acked with it
    const keepAlive = setInterval(() => msg.working(), Math.max(300, cfg.swarm.lease_ttl / 3));
    const started = Date.now();
    active.add(req.request);
    node.membership.heartbeatNow();
    try {
      const record = msg.info.deliveryCount > 1 ? await readRequest(kv, req.request) : undefined;
      if (record?.status === "answered" && record.answer) {
        // Answered before its leader could ack: send the same answer again; the stream dedupes it.
        leadership.fence();
        await events.publishAnswer(req.request, record.answer);
        msg.ack();
        return;
      }
      const resumed = record?.plan && record.summary ? { plan: record.plan, summary: record.summary } : undefined;
      // Asking the LLM for a plan takes a while: tell the submitter at once that a coordinator has it.
      // Otherwise `planned` follows within a millisecond and says the same (one stored event less).
      if (!resumed && plansWithLlm({ explicit: req.plan, capabilities: req.capabilities, llm })) {
        leadership.fence();
        events.tell(req.request, { kind: "accepted" });
      }
      await node.membership.discovered; // plan against the whole swarm, not the first few replies
      const { registry } = node.membership;
      const online = { capabilities: onlineCapabilities(registry), nodes: onlineNodes(registry) };
      const { plan, summary } = resumed ?? (await planRequest(req, online, cfg.swarm.tasks, llm));
      leadership.fence();
      if (resumed)
        log.info("Request resumed", { request: req.request, previous_coordinator: record?.coordinator, tasks: plan.tasks.length });
      else {
        events.tell(req.request, { kind: "planned", plan: summary });
        log.info("Request planned", {
          request: req.request,
          planner: summary.planner,
          tasks: plan.tasks.map((t) => `${t.id}:${t.capability}`).join(","),
        });
      }
      const base: RequestRecord = {
        v: 1,
        status: "running",
        coordinator: me,
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
          coordinator: me,
          defaultTimeoutMs: cfg.swarm.tasks.timeout,
          fence: leadership.fence,
          signer,
          checkResult: signer ? (r) => verifyResult(r, trustedResultKeys) : undefined,
          // No request event: the node's own `started` task event already tells followers.
          onAssigned: (task, node) =>
            log.info("Task assigned", { task, request: req.request, node, capability: plan.tasks.find((t) => t.id === task)?.capability }),
        },
        req.request,
        plan,
        resumed !== undefined,
      );
      runs.set(req.request, run);
      const outcomes = await run.outcomes;

      const answer = await answerFor(
        { request: req.request, requestText: req.text, plan: summary, outcomes, durationMs: Date.now() - base.started_at },
        llm,
        base.started_at,
      );
      await answerRequest({ kv, leadership, events }, msg, req.request, base, answer);
      requestsDone.inc({ status: answer.status ?? "completed" });
      log.info("Request answered", {
        request: req.request,
        status: answer.status,
        tasks: outcomes.length,
        duration_ms: answer.duration_ms,
        tokens: answer.usage?.total_tokens,
      });
    } catch (err) {
      if (err instanceof PlanError) {
        log.warn("Request rejected", { request: req.request, error: err.message });
        requestsDone.inc({ status: "rejected" });
        const base: RequestRecord = { v: 1, status: "running", coordinator: me, lease: leadership.revision(), started_at: started };
        await answerRequest({ kv, leadership, events }, msg, req.request, base, {
          kind: "failed",
          error: err.message,
          duration_ms: Date.now() - started,
        }).catch(() => msg.nak(1_000));
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
      node.membership.heartbeatNow();
    }
  }
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
