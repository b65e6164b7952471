// Runs sub-tasks on a worker or specialist: pulls only while a slot is free, highest priority first,
// keeps the JetStream message alive while the LLM works, records the result once, then acks.
import type { JetStreamManager, JsMsg, KV, NatsConnection, Subscription } from "nats";
import { acceptWorkItem, type BadInputCounter } from "./bad-input.ts";
import type { Config } from "./config.ts";
import { createDoorbell } from "./doorbell.ts";
import { LlmError, type LlmProvider } from "./llm-types.ts";
import type { Logger } from "./log.ts";
import { encode } from "./messages.ts";
import { pullAvailable } from "./pull.ts";
import { retryDelay } from "./retry.ts";
import { type Signer, signResult, verifyTaskMessage } from "./signing.ts";
import { ensureConsumer, openTasksKv } from "./streams.ts";
import { PRIORITIES, type SwarmNames } from "./subjects.ts";
import { type TaskEvent, type TaskMsg, type TaskResult, taskSchema } from "./task-messages.ts";
import { appendAttemptError, attemptErrors, readResult, recordResultOnce } from "./task-records.ts";

export interface RunningTask {
  request: string;
  task: string;
  capability: string;
  started_at: number;
}

export interface Executor {
  running(): RunningTask[];
  counts(): { done: number; failed: number };
  /**
   * Stop pulling; give running sub-tasks up to `graceMs` to finish, then abort the rest and hand them
   * back (nak) so another node takes them at once.
   */
  stop(graceMs?: number): Promise<void>;
}

export interface ExecutorOptions {
  nc: NatsConnection;
  jsm: JetStreamManager;
  names: SwarmNames;
  cfg: Config;
  node: string;
  /** Capabilities this node pulls: workers add `general`, specialists only their own. */
  capabilities: string[];
  llm: LlmProvider;
  log: Logger;
  bad: BadInputCounter;
  /** Called when the set of running sub-tasks changes (heartbeat right away). */
  onChange: () => void;
  /** With swarm.security.signing: this node's key (results are signed; sub-tasks must be). */
  signer?: Signer;
  /** How many other online nodes pull this capability: a burst is shared with them. */
  peersWith?: (capability: string) => number;
}

const IDLE_POLL_MS = 1_000;
const PROGRESS_EVERY_MS = 500;
const ANNOUNCE_GRACE_MS = 50;
const SHARE_WAIT_MS = 10;
// A pull answers at once; one that does not (a consumer leader still being elected in a cluster)
// should not hold up the other queues for long.
const PULL_TIMEOUT_MS = 1_000;

export async function startExecutor(o: ExecutorOptions): Promise<Executor> {
  const { nc, names, cfg, node, log } = o;
  const t = cfg.swarm.tasks;
  const kv = await openTasksKv(nc, names, cfg);
  const stream = names.streams.tasks;

  // Highest priority first; the node's own direct queue before everything.
  const queues: { durable: string; subject: string; capability?: string }[] = [
    { durable: names.consumers.direct(node), subject: names.taskDirect(node) },
  ];
  for (const prio of PRIORITIES) {
    for (const cap of o.capabilities)
      queues.push({ durable: names.consumers.queue(cap, prio), subject: names.taskQueue(cap, prio), capability: cap });
  }
  await Promise.all(
    queues.map((q) => ensureConsumer(o.jsm, stream, q.durable, q.subject, { ackWait: t.ack_wait, maxDeliver: t.max_deliver })),
  );
  const order = queues.map((q) => q.durable);
  const durableOf = new Map(queues.map((q) => [q.subject, q.durable]));

  const trustedCoordinators = new Set(cfg.swarm.security.trusted_coordinators);
  const sign = (r: TaskResult) => (o.signer ? signResult(o.signer, r) : r);
  const running = new Map<string, RunningTask & { abort: AbortController; msg: JsMsg }>();
  let done = 0;
  let failed = 0;
  let stopping = false;
  let slots = 0;
  const bell = createDoorbell();
  const wake = () => bell.ring();

  // Which queues may hold work. A pull that finds one empty clears it, unless work was announced for
  // it meanwhile (the generation moved on); the idle poll marks them all again (naks with delay come
  // back without any announcement). So an idle node does not ask every queue on every wake-up.
  const generation = new Map(order.map((d) => [d, 1]));
  const maybeWork = new Set(order);
  const announcedAt = new Map<string, number>();
  const announce = (subject: string) => {
    const durable = durableOf.get(subject);
    if (!durable) return;
    generation.set(durable, generation.get(durable)! + 1);
    announcedAt.set(durable, Date.now());
    maybeWork.add(durable);
    wake();
  };

  // A copy of every task published for our capabilities is the doorbell: pull right away.
  const doorbells: Subscription[] = [
    nc.subscribe(names.taskDirect(node), { callback: (_e, m) => announce(m.subject) }),
    ...o.capabilities.map((cap) => nc.subscribe(names.taskQueueAnyPriority(cap), { callback: (_e, m) => announce(m.subject) })),
  ];

  // Up to `max` messages from the first queue (in priority order) that has any, each handed to `take`
  // as soon as it is here. One message first; if more are waiting, a fair share of them in one more
  // pull: sub-tasks are long (LLM calls), so a burst should go to every idle node, not all to the
  // first one that woke up.
  const pullBatch = async (max: number, take: (msgs: JsMsg[]) => void): Promise<{ taken: number; leftForPeers: boolean }> => {
    for (const q of queues) {
      const { durable } = q;
      if (!maybeWork.has(durable)) continue;
      const gen = generation.get(durable);
      let got = await pullAvailable(nc, { stream, durable, max: 1, waitMs: 0, timeoutMs: PULL_TIMEOUT_MS });
      // The copy of a message can reach us a moment before the consumer can hand it out: right after
      // an announcement, wait briefly for it instead of giving up until the next poll.
      if (got.length === 0 && Date.now() - (announcedAt.get(durable) ?? 0) < ANNOUNCE_GRACE_MS) {
        got = await pullAvailable(nc, { stream, durable, max: 1, waitMs: ANNOUNCE_GRACE_MS, timeoutMs: PULL_TIMEOUT_MS });
      }
      if (got.length > 0) {
        // Started before the second pull: nats-server 2.9 sometimes leaves a no-wait pull that finds
        // nothing unanswered, and this sub-task must not wait out our timeout for it.
        take(got);
        const sharers = 1 + (q.capability ? (o.peersWith?.(q.capability) ?? 0) : 0);
        const more = Math.min(max - 1, Math.ceil(got[0]!.info.pending / sharers));
        const extra = more > 0 ? await pullAvailable(nc, { stream, durable, max: more, waitMs: 0, timeoutMs: PULL_TIMEOUT_MS }) : [];
        take(extra);
        const left = (extra.at(-1) ?? got[0]!).info.pending;
        const taken = got.length + extra.length;
        // Empty now, and nothing announced since we asked: no need to ask again until a doorbell.
        if (left === 0 && generation.get(durable) === gen) maybeWork.delete(durable);
        return { taken, leftForPeers: sharers > 1 && left > 0 && taken < max };
      }
      if (generation.get(durable) === gen) maybeWork.delete(durable);
    }
    return { taken: 0, leftForPeers: false };
  };

  const loop = (async () => {
    while (!stopping) {
      // `slots` counts sub-tasks from the moment they are pulled, so max_concurrent holds even while
      // one is still being checked before it is marked running.
      while (!stopping && slots < cfg.swarm.max_concurrent) {
        const wasIdle = slots === 0;
        const { taken, leftForPeers } = await pullBatch(cfg.swarm.max_concurrent - slots, (batch) => {
          for (const msg of batch) {
            if (stopping) {
              msg.nak();
              continue;
            }
            slots++;
            void execute(msg).finally(() => {
              slots--;
              wake();
            });
          }
        });
        if (taken === 0) break;
        // An idle node that took its share of a burst lets its peers (woken by the same burst) take
        // theirs before it comes back for the rest. Busy nodes pull on: under steady load the work
        // spreads by itself, and waiting would only idle slots.
        if (leftForPeers && wasIdle) await Bun.sleep(SHARE_WAIT_MS);
      }
      const rung = await bell.wait(IDLE_POLL_MS);
      if (!rung) for (const d of order) maybeWork.add(d);
    }
  })();

  const publishEvent = (task: TaskMsg, kind: TaskEvent["kind"], attempt: number, extra: Partial<TaskEvent> = {}) => {
    const ev: TaskEvent = {
      v: 1,
      request: task.request,
      task: task.task,
      kind,
      node,
      capability: task.capability,
      at: Date.now(),
      attempt,
      ...extra,
    };
    // The EVENTS stream stores it whoever publishes it; nobody waits for the store's ack (a lost event
    // is caught by the coordinator's reconcile), so a plain publish spares a reply per event.
    try {
      nc.publish(names.taskEvents(task.request, task.task), encode(ev));
    } catch (err) {
      log.debug("Task event not sent", { task: task.task, kind, error: (err as Error).message });
    }
  };

  async function execute(msg: JsMsg): Promise<void> {
    const task = acceptWorkItem(msg, taskSchema, o.bad);
    if (!task) return;
    if (o.signer) {
      const verdict = await verifyTaskMessage(msg, trustedCoordinators, cfg.swarm.security.max_skew, kv);
      if (!verdict.ok) {
        o.bad.record(msg.subject, `rejected: ${verdict.reason}`);
        log.warn("Rejected sub-task", { task: task.task, request: task.request, node, reason: verdict.reason });
        msg.term(); // no reason: nats-server 2.9 ignores "+TERM <reason>" and would redeliver
        return;
      }
    }
    const key = `${task.request}/${task.task}`;
    if (running.has(key)) {
      msg.nak(1_000); // the same sub-task delivered twice to this node at once
      return;
    }
    const attempt = msg.info.deliveryCount;
    // Only a redelivery can find its result already recorded (a re-queue reuses the dedupe id).
    if (attempt > 1 && (await recorded(kv, task))) {
      log.debug("Sub-task already has a result; redelivery ignored", { task: task.task, request: task.request });
      msg.ack();
      return;
    }
    const started = Date.now();
    const abort = new AbortController();
    running.set(key, { request: task.request, task: task.task, capability: task.capability, started_at: started, abort, msg });
    o.onChange();
    log.info("Task assigned", { task: task.task, request: task.request, node, capability: task.capability, attempt });
    publishEvent(task, "started", attempt);
    const keepAlive = setInterval(() => msg.working(), Math.max(500, t.ack_wait / 3));
    const timeout = AbortSignal.timeout(task.timeout_ms);
    let lastProgress = started; // the first progress event comes a throttle period after `started`
    try {
      const completion = await o.llm.complete({
        messages: taskMessages(task),
        signal: AbortSignal.any([abort.signal, timeout]),
        onProgress: (tokens) => {
          const now = Date.now();
          if (now - lastProgress < PROGRESS_EVERY_MS) return;
          lastProgress = now;
          publishEvent(task, "progress", attempt, { tokens, elapsed_ms: now - started });
        },
      });
      const text = truncate(completion.text, t.max_result_bytes);
      const result: TaskResult = {
        v: 1,
        request: task.request,
        task: task.task,
        status: "completed",
        node,
        capability: task.capability,
        text: text.value,
        errors: attempt > 1 ? await attemptErrors(kv, task.request, task.task) : [],
        attempts: attempt,
        started_at: started,
        finished_at: Date.now(),
        usage: completion.usage,
        llm: o.llm.label,
        truncated: text.truncated,
      };
      const record = sign(result);
      const first = await recordResultOnce(kv, record);
      publishEvent(task, first ? "completed" : "duplicate", attempt, {
        elapsed_ms: Date.now() - started,
        tokens: completion.usage.completion_tokens,
        result: first ? record : undefined,
      });
      msg.ack();
      done++;
      log.info(first ? "Task completed" : "Task finished again (result already recorded by another run)", {
        task: task.task,
        request: task.request,
        node,
        duration_ms: Date.now() - started,
        tokens: completion.usage.total_tokens,
      });
    } catch (err) {
      if (abort.signal.aborted) {
        msg.nak(); // node stopping: hand it back at once
        log.info("Task handed back", { task: task.task, request: task.request, node });
        return;
      }
      const e = toLlmError(err, timeout.aborted, task.timeout_ms);
      await appendAttemptError(kv, task.request, task.task, `attempt ${attempt} on ${node}: ${e.message}`);
      if (e.transient && attempt < t.max_deliver) {
        const delay = retryDelay(attempt, e.retryAfterMs);
        publishEvent(task, "retrying", attempt, { error: e.message, retry_in_ms: delay, elapsed_ms: Date.now() - started });
        log.warn("Task attempt failed, will retry", {
          task: task.task,
          request: task.request,
          node,
          attempt,
          retry_in_ms: delay,
          error: e.message,
        });
        msg.nak(delay);
        return;
      }
      const result: TaskResult = {
        v: 1,
        request: task.request,
        task: task.task,
        status: "failed",
        node,
        capability: task.capability,
        error: e.message,
        errors: await attemptErrors(kv, task.request, task.task),
        attempts: attempt,
        started_at: started,
        finished_at: Date.now(),
        usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
        llm: o.llm.label,
        truncated: false,
      };
      const record = sign(result);
      const first = await recordResultOnce(kv, record).then(
        (created) => (created ? "created" : "taken"),
        () => "unknown",
      );
      if (first === "taken") {
        // Someone recorded an outcome first; this attempt's failure is not reported.
        msg.ack();
        return;
      }
      // Not known to be recorded: the coordinator reads KV rather than trust this copy.
      publishEvent(task, "failed", attempt, {
        error: e.message,
        elapsed_ms: Date.now() - started,
        result: first === "created" ? record : undefined,
      });
      msg.term();
      failed++;
      log.warn("Task failed", { task: task.task, request: task.request, node, attempts: attempt, error: e.message });
    } finally {
      clearInterval(keepAlive);
      running.delete(key);
      o.onChange();
      wake();
    }
  }

  return {
    running: () => [...running.values()].map(({ request, task, capability, started_at }) => ({ request, task, capability, started_at })),
    counts: () => ({ done, failed }),
    async stop(graceMs = 0) {
      stopping = true;
      for (const s of doorbells) s.unsubscribe();
      wake();
      await loop;
      if (running.size > 0 && graceMs > 0) {
        log.info("Draining: waiting for running sub-tasks", { node, running: running.size, grace_ms: graceMs });
        const end = Date.now() + graceMs;
        while (running.size > 0 && Date.now() < end) await Bun.sleep(20);
      }
      // Whatever is still running is handed back (nak) so another node takes it at once.
      for (const r of running.values()) r.abort.abort();
      const end = Date.now() + 5_000;
      while (running.size > 0 && Date.now() < end) await Bun.sleep(20);
    },
  };
}

function taskMessages(task: TaskMsg) {
  const inputs = task.inputs.map((i) => `### Result of "${i.title}" (${i.task})\n${i.result}`).join("\n\n");
  return [
    {
      role: "system" as const,
      content: `You are a ${task.capability} agent in a PicoClaw swarm. Do only your part: ${task.title}. Answer in Markdown.`,
    },
    { role: "user" as const, content: inputs ? `${task.prompt}\n\n## Inputs from earlier sub-tasks\n\n${inputs}` : task.prompt },
  ];
}

function toLlmError(err: unknown, timedOut: boolean, timeoutMs: number): LlmError {
  if (timedOut) return new LlmError(`timed out after ${timeoutMs}ms`, true);
  if (err instanceof LlmError) return err;
  return new LlmError((err as Error)?.message ?? String(err), true);
}

function truncate(text: string, maxBytes: number): { value: string; truncated: boolean } {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxBytes) return { value: text, truncated: false };
  const cut = new TextDecoder().decode(bytes.slice(0, maxBytes)).replace(/\uFFFD$/, "");
  return { value: `${cut}\n\n[truncated at ${maxBytes} bytes]`, truncated: true };
}

async function recorded(kv: KV, task: TaskMsg): Promise<boolean> {
  return (await readResult(kv, task.request, task.task)) !== undefined;
}
