#!/usr/bin/env bun
// The worker: pull sub-tasks for its capabilities (and `general`) while a slot is free, execute each
// with its LLM, report progress and the result, ack. Many workers share each capability's queue.
import { runEntry } from "../lib/cli.ts";
import { nodeLlm } from "../lib/llm.ts";
import { createLogger } from "../lib/log.ts";
import { type MemberNode, serveMember } from "../lib/node.ts";
import { onlineCapabilities } from "../lib/registry.ts";
import { loadSigner } from "../lib/signing.ts";
import { ensureConsumer, openOrWait, openTasksKv } from "../lib/streams.ts";
import { PRIORITIES } from "../lib/subjects.ts";
import { createRunner } from "./worker/runner.ts";
import { type Queue, startScheduler } from "./worker/scheduler.ts";
import { durableInactivitySafe } from "./worker/server-features.ts";
import { openToolbox } from "./worker/toolbox.ts";

/** A node's direct queue is removed by the server after this long without a pull (2.12+). */
const DIRECT_QUEUE_IDLE_MS = 3_600_000;

/**
 * Runs a started node as a worker of `capabilities` until it is stopped. Specialists run the same
 * story with only their own capabilities; workers add `general`.
 */
export async function runWorker(node: MemberNode, capabilities: string[]): Promise<void> {
  const { config: cfg, log, names, identity } = node;
  const llm = await nodeLlm(node);
  // Tools first: a required MCP server that cannot start stops the node before it joins.
  const toolbox = await openToolbox(cfg, identity.node, log, node.metrics);
  const signer = loadSigner(cfg, "trusted_coordinators", log);
  const kv = await node.startUp("open the tasks bucket", () =>
    openOrWait(node.jsm, names.kvStream(names.buckets.tasks), () => openTasksKv(node.link.nc, names, cfg), log),
  );

  // Its own direct queue first, then each capability's queues, highest priority first.
  const queues: Queue[] = [{ durable: names.consumers.direct(identity.node), subject: names.taskDirect(identity.node) }];
  for (const prio of PRIORITIES) {
    for (const cap of capabilities)
      queues.push({ durable: names.consumers.queue(cap, prio), subject: names.taskQueue(cap, prio), capability: cap });
  }
  const { ack_wait, max_deliver } = cfg.swarm.tasks;
  // Our direct queue expires when nobody pulls from it for an hour (a crash), where the server can be
  // trusted with that (2.12+); a live node whose slots were all busy that long creates it again.
  const inactiveMs = durableInactivitySafe(node.link.nc) ? DIRECT_QUEUE_IDLE_MS : undefined;
  const settings = (q: Queue) => ({ ackWait: ack_wait, maxDeliver: max_deliver, inactiveMs: q.capability ? undefined : inactiveMs });
  await node.startUp("create the task consumers", () =>
    Promise.all(queues.map((q) => ensureConsumer(node.jsm, names.streams.tasks, q.durable, q.subject, settings(q), log))),
  );

  // Execute: one sub-task at a time per slot. Tell the swarm at once when a slot fills or frees.
  const outcomes = node.metrics.counter("picoclaw_subtasks_total", "Sub-tasks this node ran, by capability and outcome.");
  const runner = createRunner({
    outcomes,
    ...node,
    nc: node.link.nc,
    kv,
    cfg,
    node: identity.node,
    llm,
    signer,
    tools: toolbox.registry,
    onToolDone: toolbox.observe,
    onChange: () => node.membership.heartbeatNow(),
  });
  // Pull: only while a slot is free, sharing bursts with the peers that have the same capability.
  const scheduler = startScheduler({
    nc: node.link.nc,
    stream: names.streams.tasks,
    queues,
    doorbells: [names.taskDirect(identity.node), ...capabilities.map((cap) => names.taskQueueAnyPriority(cap))],
    maxConcurrent: cfg.swarm.max_concurrent,
    peersWith: (capability) => onlineCapabilities(node.membership.registry).get(capability) ?? 0,
    run: (msg) => runner.run(msg),
    onError: (err) => log.error("Sub-task runner failed", { error: (err as Error)?.message ?? String(err) }),
    recreate: async (q) => {
      const created = await ensureConsumer(node.jsm, names.streams.tasks, q.durable, q.subject, settings(q), log);
      if (created) log.info("Consumer created again (the server had removed it)", { consumer: q.durable });
      return created;
    },
  });

  // Our direct queue must exist while we live: the leader removes the queues of nodes it has forgotten,
  // and a node cut off from the swarm for that long comes back to none. Checked now and then (cheap).
  const direct = queues[0]!;
  const keepQueue = setInterval(
    () => {
      scheduler.recreateIfGone(direct);
    },
    Math.min(60_000, 5 * cfg.swarm.nats.node_timeout),
  );

  // Report: heartbeats carry what runs; a stop finishes or hands back the running sub-tasks.
  node.ready({
    load: () => ({ running: runner.running().length, tasks: runner.running(), tools: toolbox.registry.names(), ...runner.counts() }),
    async stop(graceMs) {
      clearInterval(keepQueue);
      await scheduler.stop();
      await runner.stop(graceMs);
      await toolbox.close();
      // Our own queue goes with us (a restart under a new id would otherwise leave one more behind);
      // a sub-task still pinned to it is re-routed by the coordinator when it hears we left.
      await node.jsm.consumers.delete(names.streams.tasks, names.consumers.direct(identity.node)).catch(() => {});
    },
  });
}

/** A worker pulls `general` work besides its own capabilities. */
export function workerCapabilities(configured: string[]): string[] {
  return [...new Set(["general", ...configured])];
}

if (import.meta.main) {
  process.exit(
    await runEntry(process.argv.slice(2), {
      name: "picoclaw-worker",
      role: "worker",
      usage: "run a worker node: pulls general sub-tasks and those of its --swarm.capabilities",
      run: (_cli, { config }) =>
        serveMember(config, createLogger(config.log.level), (node) => runWorker(node, workerCapabilities(config.swarm.capabilities))),
    }),
  );
}
