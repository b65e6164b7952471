// Running one request's plan: queue sub-tasks whose dependencies are done, follow their events and
// records, and resolve once every sub-task has an outcome. Nothing waits for ever: a reconcile pass
// reads the stored state now and then and fails a sub-task whose capability no online node offers (after
// node_timeout) or whose deliveries are used up without a result; the request's deadline ends the rest.
// Resuming (a new leader) starts from the stored results and re-queues only what is neither recorded
// nor still queued.
import type { JetStreamClient, JetStreamManager, KV } from "nats";
import type { Decision } from "../../lib/approvals.ts";
import type { Logger } from "../../lib/log.ts";
import { encode } from "../../lib/messages.ts";
import { isTransientNatsError } from "../../lib/nats-connection.ts";
import { type Plan, type PlanTask, titleOf } from "../../lib/plan.ts";
import type { RecordGuard } from "../../lib/record-guard.ts";
import { type Signer, signMessage, type Verdict } from "../../lib/signing.ts";
import { type SwarmNames, taskKeys } from "../../lib/subjects.ts";
import type { TaskEvent, TaskMsg, TaskResult } from "../../lib/task-messages.ts";
import { readResultRecord } from "../../lib/task-records.ts";
import { rejectedResult } from "./give-up.ts";
import { taskInputs } from "./inputs.ts";
import { type LastEvent, lastStoredEvent, stuck, type Watched } from "./stuck.ts";
import type { SubTaskOutcome } from "./synthesis.ts";
import type { WhileLeading } from "./while-leading.ts";

type TaskState = "waiting" | "queued" | "running" | "parked" | "completed" | "failed" | "skipped";

/** A sub-task whose calls wait for a person: no message is queued for it until they are decided. */
interface Parked {
  ids: string[];
  tools: string[];
  /** The node that asked: it gets the sub-task back when it is still online (its workspace is there). */
  node: string;
  expiresAt: number;
  /** The stored `approval` event's sequence in EVENTS: which parking this is (each is answered once). */
  parking: number;
}
interface Tracked {
  task: PlanTask;
  state: TaskState;
  result?: TaskResult;
  skipped?: string;
  /** The node running it now (from its events). */
  node?: string;
  /** Re-routed away from its pinned node. */
  rerouted?: boolean;
  /** A sub-task that needs tools: the node it was sent to, or undefined while no online node has them. */
  target?: string;
  /** Its message in the TASKS stream, while it is queued or running. */
  seq?: number;
  /** The last thing a node said about it: what attempt it is on, and when. */
  last?: LastEvent;
  /** A reconcile check of it is under way (one at a time: a check may be riding out a NATS blip). */
  checking?: boolean;
  /** What the reconcile pass keeps about it between checks. */
  watch: Watched;
  parked?: Parked;
  /** The last parking a resume answered (a stored `approval` event at or before it is history). */
  answeredParking?: number;
  /** Sent again after a parking was decided (`cause` names it), to `node`; no node yet: waiting for one with its tools. */
  resumed?: { cause: string; tools: string[]; prefer: string; node?: string; said?: boolean };
  /** When the stored events were last read for it (a silent node may have parked it). */
  lookedAt?: number;
}

export interface RunContext {
  js: JetStreamClient;
  jsm: JetStreamManager;
  kv: KV;
  names: SwarmNames;
  log: Logger;
  coordinator: string;
  defaultTimeoutMs: number;
  /** Epoch ms by which the request must end: sub-tasks carry it, unfinished ones fail when it passes. */
  deadlineAt: number;
  /** swarm.tasks.max_deliver, ack_wait and swarm.nats.node_timeout: when stored state means "given up". */
  maxDeliver: number;
  ackWaitMs: number;
  nodeTimeoutMs: number;
  /** Online nodes that would take a sub-task of this capability now. */
  onlineFor(capability: string, tools?: string[]): number;
  /** Online nodes that take `capability` and have every tool, least busy first (none given: tools never route). */
  nodesWithTools?(capability: string, tools: string[], exclude: Set<string>): string[];
  /** Throws when this coordinator is no longer the leader; called before every write. */
  fence(): void;
  /** Runs a NATS step, retrying a blip in place while the lease is ours (a finished step is never redone). */
  whileLeading: WhileLeading;
  onAssigned(task: string, node: string): void;
  /**
   * Sub-tasks just queued, with their stream sequences (recorded so a resume does not queue them again),
   * and, for those sent again after a decision, the parking each answers.
   */
  onQueued(seqs: Record<string, number>, resumed?: Record<string, number>): Promise<void>;
  /** Records a failure the coordinator decided (no node, deliveries used up); false when a result beat it. */
  recordFailure(
    task: { request: string; task: string; capability: string },
    error: string,
    attempts: number,
  ): Promise<TaskResult | undefined>;
  /** With signing on: signs each queued sub-task, and checks each result (a failed check fails the sub-task). */
  signer?: Signer;
  checkResult?: (r: TaskResult) => Verdict;
  /** How result records read back from KV are checked and reported (a bad one fails its sub-task). */
  records: RecordGuard;
  /** swarm.tasks.max_tokens_per_request (0: no limit): the run stops once the request's tokens pass it. */
  maxTokens?: number;
  /** Tokens the request used before its sub-tasks (the LLM planner). */
  spentTokens?: number;
  /** Parked sub-tasks: their calls' decisions, and what a decision or a timeout does besides resuming (metrics, events). */
  approvals?: {
    read(id: string): Promise<Decision | undefined>;
    decided(task: string, d: Decision, asked: { tool: string }): void;
    expired(task: string, ids: string[]): void;
  };
}

export interface RequestRun {
  outcomes: Promise<SubTaskOutcome[]>;
  /** The deadline ended it: the sub-tasks still open then are marked skipped. */
  expired(): boolean;
  onTaskEvent(ev: TaskEvent): void;
  onNodeOffline(node: string): void;
  /** Stops following (a stale leader handing the request over); `outcomes` rejects with `reason`. */
  abandon(reason: Error): void;
  /** Why the run ended before every sub-task did (its token limit), once it has. */
  stopped(): string | undefined;
  /** A decision on a pending call: its parked sub-task is sent again. */
  onDecision(d: Decision): void;
  /** Sub-tasks parked now (waiting for a decision). */
  parked(): number;
}

const RECONCILE_MS = 2_000;

export function runRequest(
  ctx: RunContext,
  request: string,
  plan: Plan,
  resume?: { queued?: Record<string, number>; resumed?: Record<string, number> },
): RequestRun {
  const listeningSince = Date.now(); // the coordinator hears task events (live and stored) from here on
  const tracked = new Map<string, Tracked>(
    plan.tasks.map((t) => [
      t.id,
      { task: t, state: "waiting", watch: { capability: t.capability, tools: t.tools, pinned: t.node !== undefined } },
    ]),
  );
  let finish: (o: SubTaskOutcome[]) => void = () => {};
  let fail: (e: unknown) => void = () => {};
  const outcomes = new Promise<SubTaskOutcome[]>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  let over = false;
  let expired = false;
  let stopped: string | undefined;
  const offline = new Set<string>();
  /** Completion tokens so far of sub-tasks still running (from their progress events). */
  const inFlight = new Map<string, number>();
  const terminal = (x: Tracked) => x.state === "completed" || x.state === "failed" || x.state === "skipped";

  const end = () => {
    over = true;
    clearInterval(reconcile);
    clearTimeout(deadline);
  };
  const outcomesNow = () =>
    plan.tasks.map((t) => {
      const x = tracked.get(t.id)!;
      return { id: t.id, title: titleOf(t), capability: t.capability, required: t.required, result: x.result, skipped: x.skipped };
    });
  const done = () => {
    end();
    finish(outcomesNow());
  };
  const guard = (work: () => Promise<void>) => {
    work().catch((err) => {
      if (over) return;
      end();
      fail(err);
    });
  };

  /**
   * Publishes sub-tasks (all at once: a fan-out of 64 must not wait 64 round trips) and records where
   * they are. `viaQueue`: re-routed from a node that is gone; `resume`: sent again after a decision.
   */
  const queue = async (xs: Tracked[], how: { viaQueue?: boolean; resume?: { node: string; cause: string; parking: number } } = {}) => {
    const { viaQueue = false, resume } = how;
    if (xs.length === 0) return;
    const seqs: Record<string, number> = {};
    await Promise.all(
      xs.map(async (x) => {
        const t = x.task;
        const msg: TaskMsg = {
          v: 1,
          request,
          task: t.id,
          title: titleOf(t),
          capability: t.capability,
          priority: t.priority,
          prompt: t.prompt,
          inputs: taskInputs(t.depends_on.map((id) => tracked.get(id)!)),
          timeout_ms: t.timeout_ms ?? ctx.defaultTimeoutMs,
          coordinator: ctx.coordinator,
          deadline_at: ctx.deadlineAt,
          tools: t.tools,
          resume: resume ? true : undefined,
        };
        if (resume) x.target = resume.node; // its node now (a node going offline moves what it holds)
        const routed = resume ? resume.node : routeByTools(x);
        if (routed === "none") return; // no node has its tools now: the reconcile pass routes it later
        const pinned = routed !== undefined || (t.node !== undefined && !viaQueue && !offline.has(t.node));
        const target = routed ?? t.node;
        const subject = pinned ? ctx.names.taskDirect(target!) : ctx.names.taskQueue(t.capability, t.priority);
        // The message id makes a second publish within the stream's dedupe window a no-op, so a publish
        // whose reply was lost in a blip is simply sent again.
        const payload = encode(msg);
        const msgID = `${request}.${t.id}${resume ? `.${resume.cause}` : ""}${routed ? `.${routed}` : viaQueue ? ".rerouted" : ""}`;
        const ack = await ctx.whileLeading("queue a sub-task", () => {
          ctx.fence();
          return ctx.js.publish(subject, payload, {
            msgID,
            headers: ctx.signer ? signMessage(ctx.signer, subject, payload, msgID) : undefined,
          });
        });
        x.seq = ack.seq;
        seqs[t.id] = ack.seq;
        ctx.log.debug("Task queued", {
          task: t.id,
          request,
          capability: t.capability,
          priority: t.priority,
          node: pinned ? t.node : undefined,
        });
      }),
    );
    await ctx.onQueued(seqs, resume ? Object.fromEntries(Object.keys(seqs).map((id) => [id, resume.parking])) : undefined);
  };

  /**
   * A sub-task that needs tools goes to one node that has them all (its direct queue): the node, or
   * "none" while no online node has them; undefined for a sub-task that needs none.
   */
  const routeByTools = (x: Tracked): string | undefined | "none" => {
    const tools = x.task.tools;
    if (!tools?.length || !ctx.nodesWithTools) return undefined;
    x.target = ctx.nodesWithTools(x.task.capability, tools, offline)[0];
    return x.target ?? "none";
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
    await queue(ready);
    if (changed) return dispatchReady();
    if (!over && [...tracked.values()].every(terminal)) done();
  };

  /**
   * The result recorded in KV, checked. A record that fails its schema, or (signing on) its signature, is
   * a failed result that says why: waiting for a good one could take for ever, since a result is
   * recorded once.
   */
  const stored = async (x: Tracked): Promise<TaskResult | undefined> => {
    const r = await ctx.whileLeading("read a sub-task's result", () => readResultRecord(ctx.kv, request, x.task.id, ctx.records));
    if (r.state === "absent") return undefined;
    if (r.state === "ok") return checked(r.value);
    ctx.log.warn("Result rejected", { task: x.task.id, request, reason: r.reason });
    const now = Date.now();
    return {
      v: 1,
      request,
      task: x.task.id,
      status: "failed",
      node: ctx.coordinator,
      capability: x.task.capability,
      error: `result rejected: unreadable record (${r.reason})`,
      errors: [],
      attempts: 1,
      started_at: now,
      finished_at: now,
      usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
      llm: "none",
      truncated: false,
    };
  };
  const checked = (result: TaskResult): TaskResult => {
    const verdict = ctx.checkResult?.(result);
    if (!verdict || verdict.ok) return result;
    ctx.log.warn("Result rejected", { task: result.task, request, node: result.node, reason: verdict.reason });
    ctx.records.refuse(taskKeys.result(request, result.task), "result", verdict.reason);
    return rejectedResult(result, verdict.reason);
  };

  /** `carried`: the result from the node's event (already recorded); otherwise read from KV. */
  const settle = async (id: string, carried?: TaskResult) => {
    const x = tracked.get(id);
    if (!x || x.result || over) return;
    const fits = carried && carried.request === request && carried.task === id;
    const result = fits ? checked(carried) : await stored(x);
    if (result) await apply(x, result);
  };
  const apply = async (x: Tracked, result: TaskResult) => {
    if (x.result || over) return;
    x.result = result;
    x.state = result.status;
    inFlight.delete(x.task.id);
    if (overBudget()) return;
    await dispatchReady();
  };

  /** The coordinator gives a sub-task up: recorded as failed (unless a result came first), its message removed. */
  const giveUp = async (x: Tracked, error: string, attempts: number) => {
    const recorded = await ctx.whileLeading("record a sub-task's failure", () => {
      ctx.fence();
      return ctx.recordFailure({ request, task: x.task.id, capability: x.task.capability }, error, attempts);
    });
    if (x.seq !== undefined) await ctx.jsm.streams.deleteMessage(ctx.names.streams.tasks, x.seq).catch(() => {});
    if (recorded) ctx.log.warn("Task failed", { task: x.task.id, request, attempts, error });
    await settle(x.task.id, recorded);
  };

  /** What the stored state says about one unfinished sub-task; acts on it when it will never end by itself. */
  const check = async (id: string, x: Tracked, now: number) => {
    if (x.checking) return;
    x.checking = true;
    try {
      const recorded = await stored(x);
      if (recorded) return apply(x, recorded);
      // Decided while no node had its tools: sent once one is online (until the deadline).
      if (x.resumed && x.resumed.node === undefined) return sendResumed(x);
      // Waiting for a node with its tools: sent as soon as one is online.
      if (
        !x.resumed &&
        x.task.tools?.length &&
        x.target === undefined &&
        x.state === "queued" &&
        ctx.nodesWithTools?.(x.task.capability, x.task.tools, offline).length
      )
        await queue([x], { viaQueue: true });
      // Silent longer than a running node's progress interval: it may have parked the sub-task (acked
      // its message), and the live word of it missed us. The stored events say (read at most that often).
      const quiet = ctx.ackWaitMs / 2;
      if (now - (x.last?.at ?? 0) > quiet && now - (x.lookedAt ?? 0) > quiet) {
        x.lookedAt = now;
        const stored = await lastStoredEvent(ctx.jsm, ctx.names, request, id, listeningSince);
        if (stored?.kind === "approval") {
          await enterParked(x, stored);
          if (x.state === "parked") return;
        } else x.last ??= stored;
      }
      x.watch.pinned = (x.task.node !== undefined && !x.rerouted) || x.resumed !== undefined;
      if (x.watch.last?.kind === "approval") x.watch.last = undefined; // an answered parking says nothing of the run now
      x.watch.last = x.last;
      const why = stuck(x.watch, ctx, now);
      if (why) return giveUp(x, why.error, why.attempts);
    } finally {
      x.checking = false;
    }
  };

  /**
   * A node parked the sub-task (its calls wait for a person) and acked its message: nothing is queued
   * and nothing is stuck until the calls are decided or time out. Each parking is its stored event (its
   * EVENTS sequence): one heard live is looked up there, and one a resume answered is history.
   */
  const enterParked = async (x: Tracked, ev: LastEvent) => {
    if (terminal(x)) return;
    const stored = ev.seq !== undefined ? ev : await lastStoredEvent(ctx.jsm, ctx.names, request, x.task.id, listeningSince);
    const calls = stored?.kind === "approval" ? (stored.approvals ?? []) : [];
    if (!stored || stored.seq === undefined || calls.length === 0 || terminal(x)) return;
    if (stored.seq <= (x.answeredParking ?? 0) || x.parked?.parking === stored.seq) return;
    x.state = "parked";
    x.seq = undefined;
    x.resumed = undefined;
    x.parked = {
      ids: calls.map((c) => c.id),
      tools: [...new Set(calls.map((c) => c.tool))],
      node: stored.node ?? x.node ?? "",
      expiresAt: Math.min(...calls.map((c) => c.expires_at)),
      parking: stored.seq,
    };
    ctx.log.info("Task parked: waiting for approval", { task: x.task.id, request, node: x.parked.node, approvals: x.parked.ids.join(",") });
    await checkParked(x, Date.now());
  };

  /**
   * A parked sub-task, looked at by the reconcile pass and whenever a decision is heard: decided (read
   * back from KV, whoever decided and however we heard), or past its calls' time-out, it is sent again.
   */
  const checkParked = async (x: Tracked, now: number) => {
    const p = x.parked;
    if (!p || x.state !== "parked" || over) return;
    for (const id of p.ids) {
      const d = await ctx.approvals?.read(id);
      if (!d || x.parked !== p) continue;
      ctx.approvals?.decided(x.task.id, d, { tool: d.tool });
      return resumeParked(x, p);
    }
    if (now >= p.expiresAt + 250 && x.parked === p) {
      ctx.approvals?.expired(x.task.id, p.ids);
      return resumeParked(x, p);
    }
  };

  /** Sends a parked sub-task again, once per parking (its message id names the parking). */
  const resumeParked = async (x: Tracked, p: Parked) => {
    if (terminal(x) || over) return;
    x.parked = undefined;
    x.state = "queued";
    x.last = undefined; // its next attempt starts afresh (a new message)
    x.answeredParking = p.parking;
    x.resumed = { cause: `resume-${p.parking}`, tools: p.tools, prefer: p.node };
    await sendResumed(x);
  };

  /** To the node that asked when it is online with the tools, else another that has them, else later. */
  const sendResumed = async (x: Tracked) => {
    const r = x.resumed!;
    const nodes = ctx.nodesWithTools?.(x.task.capability, r.tools, offline) ?? [];
    r.node = nodes.includes(r.prefer) ? r.prefer : nodes[0];
    if (!r.node) {
      if (!r.said) ctx.log.info("Decided call waits for a node with its tools", { task: x.task.id, request, tools: r.tools.join(",") });
      r.said = true;
      return;
    }
    await queue([x], { resume: { node: r.node, cause: r.cause, parking: x.answeredParking ?? 0 } });
  };

  /** Ends the run now: what has not ended is skipped with `reason`, and its queued message removed. */
  const endOpen = (reason: string) => {
    for (const x of tracked.values()) {
      if (terminal(x)) continue;
      x.state = "skipped";
      x.skipped = reason;
      if (x.seq !== undefined) ctx.jsm.streams.deleteMessage(ctx.names.streams.tasks, x.seq).catch(() => {});
    }
    done();
  };

  /** Past max_tokens_per_request (planner, results, and what running sub-tasks reported): the run ends now. */
  const overBudget = (): boolean => {
    const max = ctx.maxTokens ?? 0;
    if (max <= 0 || over) return false;
    let used = ctx.spentTokens ?? 0;
    for (const x of tracked.values()) used += x.result?.usage.total_tokens ?? 0;
    for (const n of inFlight.values()) used += n;
    if (used <= max) return false;
    stopped = `stopped: the request used ${used} tokens, more than swarm.tasks.max_tokens_per_request (${max})`;
    ctx.log.warn("Request stopped at its token limit", { request, tokens: used, max_tokens_per_request: max });
    endOpen(stopped);
    return true;
  };

  // Events are fast but may not reach us; the stored state always does. Look now and then.
  const reconcile = setInterval(() => {
    const now = Date.now();
    for (const [id, x] of tracked) {
      if (x.state === "queued" || x.state === "running") guard(() => check(id, x, now));
      else if (x.state === "parked") guard(() => checkParked(x, now));
    }
  }, RECONCILE_MS);

  // Every request ends: at its deadline, what is unfinished is marked so and the run resolves.
  const deadline = setTimeout(
    () => {
      if (over) return;
      expired = true;
      endOpen("the request's deadline passed before it finished");
    },
    Math.max(0, ctx.deadlineAt - Date.now()),
  );

  guard(async () => {
    if (overBudget()) return; // the planner alone used more than the limit
    if (resume) {
      // Whatever already has a result is settled without running again; what is still queued stays so.
      await Promise.all(
        plan.tasks.map(async (t) => {
          const x = tracked.get(t.id)!;
          // Checked like any other result: a resumed request believes only trusted, well-formed records.
          const r = await stored(x);
          if (r) return Object.assign(x, { result: r, state: r.status });
          const seq = resume.queued?.[t.id];
          x.answeredParking = resume.resumed?.[t.id];
          if (seq !== undefined && (await stillQueued(seq))) return Object.assign(x, { state: "queued", seq });
          // Parked by a node (its message acked): it stays parked, and is sent again if decided meanwhile.
          const last = await lastStoredEvent(ctx.jsm, ctx.names, request, t.id, listeningSince);
          if (last?.kind === "approval" && seq !== undefined) await enterParked(x, last);
        }),
      );
    }
    await dispatchReady();
  });

  /** Whether the sub-task's message is still in TASKS; a blip is ridden out, not read as "gone" (that would queue it twice). */
  const stillQueued = (seq: number) =>
    ctx.whileLeading("look up a queued sub-task", () =>
      ctx.jsm.streams.getMessage(ctx.names.streams.tasks, { seq }).then(
        () => true,
        (err) => {
          if (isTransientNatsError(err)) throw err;
          return false;
        },
      ),
    );

  return {
    outcomes,
    expired: () => expired,
    onTaskEvent(ev) {
      const x = tracked.get(ev.task);
      if (!x || over) return;
      // Heard now: an event's own timestamp is whatever its publisher wrote, and must not age the sub-task.
      x.last = { kind: ev.kind, attempt: ev.attempt, at: Date.now() };
      if (ev.kind === "started") {
        if (x.state === "queued") x.state = "running";
        x.node = ev.node;
        ctx.onAssigned(ev.task, ev.node);
      } else if (ev.kind === "progress" && ev.tokens !== undefined && ev.node === x.node && (ctx.maxTokens ?? 0) > 0 && !x.result) {
        // Only the running node's count (with signing on, only a signed one reaches here: roles/coordinator.ts).
        inFlight.set(ev.task, ev.tokens);
        overBudget();
      } else if (ev.kind === "completed" || ev.kind === "failed" || ev.kind === "duplicate") {
        guard(() => settle(ev.task, ev.kind === "duplicate" ? undefined : ev.result));
      } else if (ev.kind === "approval" && !x.result) {
        guard(() => enterParked(x, { ...x.last!, node: ev.node, approvals: ev.approvals })); // its stored sequence is looked up
      }
    },
    onNodeOffline(node) {
      offline.add(node);
      const moved: Tracked[] = [];
      for (const x of tracked.values()) {
        // A parked sub-task has no message anywhere; a resumed one is moved below.
        if (x.state === "parked" || x.resumed) continue;
        const movable = x.task.tools?.length ? x.target === node : x.task.node === node && !x.rerouted;
        if (!movable || terminal(x) || x.state === "waiting") continue;
        x.rerouted = true;
        ctx.log.info("Task re-routed", { task: x.task.id, request, from_node: node, capability: x.task.capability });
        // The copy pinned to the gone node would otherwise stay in the stream for ever.
        if (x.seq !== undefined) ctx.jsm.streams.deleteMessage(ctx.names.streams.tasks, x.seq).catch(() => {});
        moved.push(x);
      }
      guard(() => queue(moved, { viaQueue: true }));
      // Sent back, after a decision, to a node that is gone now (queued there or running): another one
      // with the tools resumes it from its steps (a call it had started is reported interrupted).
      for (const x of tracked.values()) {
        if (!x.resumed || x.resumed.node !== node || (x.state !== "queued" && x.state !== "running")) continue;
        if (x.seq !== undefined) ctx.jsm.streams.deleteMessage(ctx.names.streams.tasks, x.seq).catch(() => {});
        x.state = "queued";
        x.resumed = { ...x.resumed, cause: `${x.resumed.cause}.from-${node}`, node: undefined, said: false };
        guard(() => sendResumed(x));
      }
    },
    onDecision(d) {
      const x = tracked.get(d.task);
      // A doorbell: the decision is read back from KV (the one that counts, checked) before acting on it.
      if (x && !over && x.state === "parked" && x.parked?.ids.includes(d.id)) guard(() => checkParked(x, Date.now()));
    },
    parked: () => [...tracked.values()].filter((x) => x.state === "parked").length,
    stopped: () => stopped,
    abandon(reason) {
      if (over) return;
      end();
      fail(reason);
    },
  };
}
