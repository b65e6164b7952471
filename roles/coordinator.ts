#!/usr/bin/env bun
// The coordinator: take the lease (one leads, the others stand by), take requests while leading, plan
// each into sub-tasks, run them on the nodes that have the capabilities, synthesize one answer, and
// answer exactly once. Every request ends: by its answer, by its deadline, or, when handling it keeps
// failing, as a dead letter. A request whose leader died is redelivered to the next leader, which
// resumes it from the recorded plan and results.
import type { Msg } from "nats";
import { runEntry } from "../lib/cli.ts";
import { nodeLlm } from "../lib/llm.ts";
import { createLogger } from "../lib/log.ts";
import { decode } from "../lib/messages.ts";
import { type MemberNode, serveMember } from "../lib/node.ts";
import { createRecordGuard } from "../lib/record-guard.ts";
import { checkSignature, loadSigner, verifyResult } from "../lib/signing.ts";
import { ensureConsumer, openTasksKv } from "../lib/streams.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type TaskEvent, type TaskResult, taskEventSchema } from "../lib/task-messages.ts";
import { temporalSettings } from "../lib/temporal.ts";
import { coordinatorRecords, requestEvents } from "./coordinator/answer.ts";
import { coordinatorApprovals } from "./coordinator/approvals.ts";
import { failExhaustedSubTasks } from "./coordinator/give-up.ts";
import { type Intake, takeRequests } from "./coordinator/intake.ts";
import { startLeadership } from "./coordinator/leadership.ts";
import { OPEN_PER_SLOT, type OpenRequests, openRequests } from "./coordinator/request.ts";
import { sweepWhileLeading } from "./coordinator/sweep.ts";
import type { TemporalRunner } from "./coordinator/temporal/runner.ts";
import { subTaskWaiters } from "./coordinator/waiters.ts";
import { retryWhileLeading } from "./coordinator/while-leading.ts";

export async function runCoordinator(node: MemberNode): Promise<void> {
  const { config: cfg, log, names, bad } = node;
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
  const checkResult = signer ? (r: TaskResult) => verifyResult(r, trustedResultKeys) : undefined;
  const records = coordinatorRecords(node, signer);
  const giveUp = { js, kv, names, node: me, signer };
  // With signing on, a progress event's token count (which can stop a request at its token limit) is
  // believed only when a trusted worker signed it; an unsigned one still shows the sub-task is alive.
  const countable = (ev: TaskEvent, msg: Msg): TaskEvent =>
    signer && ev.tokens !== undefined && !checkSignature(msg.subject, msg.data, msg.headers, trustedResultKeys, undefined).ok
      ? { ...ev, tokens: undefined }
      : ev;
  let requests: OpenRequests | undefined;
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
      ...{ nc, names, node: me, ttlMs: cfg.swarm.lease_ttl, replicas: cfg.swarm.nats.replicas, log },
      onChange: (leading) => (leading ? intake?.wake() : requests?.abandonAll("stepped down")),
    }),
  );
  const whileLeading = retryWhileLeading(leadership, log, 3 * cfg.swarm.lease_ttl);

  // Tool calls waiting for a person: each decision sends its parked sub-task again (only a trusted
  // approver's or admin's counts with signing on).
  const sec = cfg.swarm.security;
  let temporal: TemporalRunner | undefined; // started below, once the activities can use `approvals`
  const approvals = coordinatorApprovals({
    ...{ nc, kv, names, log, metrics: node.metrics, events },
    decisions: createRecordGuard({
      bucket: names.buckets.tasks,
      bad,
      trusted: signer ? new Set([...sec.trusted_approvers, ...sec.trusted_admins]) : undefined,
    }),
    onDecision: (d) => {
      requests?.onDecision(d);
      // Temporal mode: the wait is the request's workflow's; the leader tells it (a standby would too often).
      if (leadership.holds()) void temporal?.signalDecision(d.request, { id: d.id, outcome: d.outcome });
    },
    pending: () => requests?.parked() ?? 0,
  });
  // Temporal mode (swarm.temporal.address reachable): requests run as workflows, which this coordinator's
  // worker runs alongside every other coordinator's; without it, or while it is away, the JetStream path.
  // Loaded only when configured: nodes without Temporal never load its SDK.
  const waiters = subTaskWaiters();
  const settings = temporalSettings(cfg);
  temporal = settings
    ? await (await import("./coordinator/temporal/runner.ts")).startTemporal(settings, {
        identity: me,
        log,
        maxActivities: Math.max(100, cfg.swarm.max_concurrent * OPEN_PER_SLOT),
        activities: (await import("./coordinator/temporal/activities.ts")).requestActivities({
          ...{ nc, js, jsm: node.jsm, kv, names, cfg, log, llm, me, events, giveUp, waiters, signer, checkResult, records, approvals },
          registry: () => node.membership.registry,
          discovered: node.membership.discovered,
          onAnswered: (status) => answered.inc({ status }),
        }),
      })
    : undefined;
  requests = openRequests({
    ...{ node, kv, llm, events, records, leadership, whileLeading, giveUp, signer, checkResult, temporal, answered },
    approvals,
  });

  // 2. Follow the sub-tasks of the requests we run (and those workflow activities wait for); fail those
  // that used up their deliveries; move work pinned to nodes that are gone; sweep their direct queues.
  const onTaskEvent = (_e: unknown, msg: Msg) => {
    const d = decode(taskEventSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
    if (!d.ok) return bad.record(msg.subject, d.reason);
    const ev = countable(d.value, msg);
    waiters.onTaskEvent(ev);
    requests?.onTaskEvent(ev);
  };
  const subs = [
    nc.subscribe(names.taskEventsAll, { callback: onTaskEvent }),
    nc.subscribe(names.taskLiveAll, { callback: onTaskEvent }), // what nodes say as sub-tasks run: never stored
    failExhaustedSubTasks({ ...node, ...giveUp, nc, maxDeliver: cfg.swarm.tasks.max_deliver, leading: leadership.holds }),
  ];
  node.onPeerEvent((e) => {
    if (e.kind === "offline" || e.kind === "left") requests?.onNodeOffline(e.peer.info.node);
  });
  const stopSweeping = sweepWhileLeading({
    ...{ jsm: node.jsm, names, log, nodeTimeoutMs: cfg.swarm.nats.node_timeout, leading: leadership.holds },
    registry: () => node.membership.registry,
  });

  // 3. Take requests while leading and a slot is free; each is planned, run, synthesized and answered
  // (roles/coordinator/request.ts).
  intake = takeRequests({
    nc,
    names,
    maxConcurrent: cfg.swarm.max_concurrent,
    leading: leadership.holds,
    active: () => requests.slotsUsed(),
    handle: (msg) => requests.take(msg, () => intake?.wake()),
  });

  node.ready({
    // A coordinator's load is the requests it is planning or synthesizing now.
    load: () => ({
      running: requests.running(),
      temporal: temporal && { address: temporal.address, polling: temporal.polling(), ...temporal.counts() },
    }),
    async stop() {
      await intake?.stop();
      await temporal?.stop();
      // Hand unfinished requests back (nak): a standby resumes them now, or the next coordinator later.
      requests.abandonAll("coordinator stopping");
      await requests.settled();
      for (const s of subs) s.unsubscribe();
      approvals.stop();
      stopSweeping();
      await leadership.stop();
    },
  });
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
