// Requests as they happen, for the web dashboard: each request's plan (its DAG), each sub-task's state,
// node and tokens, and the recent answers. Fed by the swarm's request and task events (core NATS
// subscriptions: a live view, so a dashboard started later sees what happens from then on). Bounded:
// finished requests are kept a while, then dropped.
import type { NatsConnection, Subscription } from "nats";
import type { BadInputCounter } from "../../lib/bad-input.ts";
import type { LlmUsage } from "../../lib/llm-types.ts";
import { decode } from "../../lib/messages.ts";
import { verifyAnswer } from "../../lib/signing.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import {
  MAX_PIPELINE_MESSAGE_BYTES,
  type RequestEvent,
  requestEventSchema,
  type TaskEvent,
  taskEventSchema,
  type UsageRow,
} from "../../lib/task-messages.ts";
import type { PendingRow } from "./approvals.ts";
import type { DashboardSnapshot } from "./snapshot.ts";

export type LiveTaskState = "queued" | "running" | "retrying" | "completed" | "failed" | "skipped";

export interface LiveTask {
  id: string;
  title: string;
  capability: string;
  depends_on: string[];
  state: LiveTaskState;
  node?: string;
  attempt?: number;
  /** Completion tokens while it runs; all its tokens once its result is in. */
  tokens: number;
  started_at?: number;
  ended_at?: number;
  error?: string;
}

export interface LiveRequest {
  request: string;
  coordinator?: string;
  planner?: string;
  state: "planning" | "running" | "merging" | "answered" | "rejected";
  /** The answer's status once answered. */
  status?: "completed" | "partial" | "failed";
  first_seen: number;
  updated_at: number;
  tasks: LiveTask[];
  /** The request's tokens so far (all of them once answered). */
  tokens: number;
  error?: string;
  duration_ms?: number;
}

export interface RecentAnswer {
  request: string;
  status: string;
  at: number;
  duration_ms?: number;
  usage?: LlmUsage;
  usage_by: UsageRow[];
  /** The answer's first ANSWER_CHARS characters. */
  answer: string;
  truncated: boolean;
  error?: string;
}

export interface LiveView {
  requests: LiveRequest[];
  answers: RecentAnswer[];
}

export interface LiveOptions {
  /** A finished request stays on the page this long. */
  keepFinishedMs: number;
  maxRequests: number;
  maxAnswers: number;
  /** A request nothing was heard of for this long is dropped (its answer went unseen). */
  forgetSilentMs: number;
}

const ANSWER_CHARS = 4_000;
const DEFAULTS: LiveOptions = { keepFinishedMs: 10 * 60_000, maxRequests: 50, maxAnswers: 20, forgetSilentMs: 60 * 60_000 };

export interface LiveRequests {
  onRequest(ev: RequestEvent): void;
  onTask(ev: TaskEvent): void;
  view(now?: number): LiveView;
  /** Grows with every change: the page is re-sent only when it moved. */
  version(): number;
  /** What is held now: bounded whether or not a page looks (events come from the network). */
  size(): { requests: number; tasks: number };
}

/** Sub-tasks kept per request at most (a plan has at most max_fanout × max_depth; forged events more). */
const MAX_TASKS_PER_REQUEST = 1024;

/** The pure part: events in, a view out. */
export function createLiveRequests(opts: Partial<LiveOptions> = {}): LiveRequests {
  const o = { ...DEFAULTS, ...opts };
  const requests = new Map<string, LiveRequest>();
  const answers: RecentAnswer[] = [];
  let version = 0;

  const byId = new WeakMap<LiveRequest, Map<string, LiveTask>>();
  const get = (request: string, at: number): LiveRequest => {
    let r = requests.get(request);
    if (!r) {
      // Pruned as events come, not only when a page asks: nobody may be looking.
      if (requests.size >= 2 * o.maxRequests) prune(Date.now());
      r = { request, state: "planning", first_seen: at, updated_at: at, tasks: [], tokens: 0 };
      requests.set(request, r);
      byId.set(r, new Map());
    }
    r.updated_at = Math.max(r.updated_at, at);
    return r;
  };
  const taskOf = (r: LiveRequest, id: string, capability: string): LiveTask => {
    const index = byId.get(r)!;
    let t = index.get(id);
    if (!t) {
      t = { id, title: id, capability, depends_on: [], state: "queued", tokens: 0 };
      // Past the cap a sub-task is followed but not kept (only forged events make that many).
      if (r.tasks.length < MAX_TASKS_PER_REQUEST) {
        r.tasks.push(t);
        index.set(id, t);
      }
    }
    return t;
  };
  /** Drops what is finished and old, silent too long, or past the cap (finished ones first); newest first. */
  const prune = (now: number): LiveRequest[] => {
    for (const [id, r] of requests) {
      const finished = r.state === "answered" || r.state === "rejected";
      if ((finished && now - r.updated_at > o.keepFinishedMs) || now - r.updated_at > o.forgetSilentMs) requests.delete(id);
    }
    let list = [...requests.values()].sort((a, b) => b.first_seen - a.first_seen);
    if (list.length > o.maxRequests) {
      const running = list.filter((r) => r.state !== "answered" && r.state !== "rejected");
      const finished = list.filter((r) => r.state === "answered" || r.state === "rejected");
      list = [...running, ...finished].slice(0, o.maxRequests).sort((a, b) => b.first_seen - a.first_seen);
      const keep = new Set(list.map((r) => r.request));
      for (const id of requests.keys()) if (!keep.has(id)) requests.delete(id);
    }
    for (const id of planning.keys()) if (!requests.has(id)) planning.delete(id);
    return list;
  };
  /** The LLM planner's tokens per request. */
  const planning = new Map<string, number>();
  const sumTokens = (r: LiveRequest, planner = 0) => {
    r.tokens = planner + r.tasks.reduce((n, t) => n + t.tokens, 0);
  };

  return {
    version: () => version,
    onRequest(ev) {
      const r = get(ev.request, ev.at);
      r.coordinator = ev.coordinator;
      if (ev.kind === "planned" && ev.plan) {
        r.planner = ev.plan.planner;
        if (r.state === "planning") r.state = "running";
        for (const p of ev.plan.tasks) {
          const t = taskOf(r, p.id, p.capability);
          t.title = p.title;
          t.depends_on = p.depends_on;
        }
        planning.set(r.request, ev.plan.usage?.total_tokens ?? 0);
        sumTokens(r, planning.get(r.request));
      } else if (ev.kind === "answer_delta") {
        if (r.state === "running" || r.state === "planning") r.state = "merging";
      } else if (ev.kind === "answer" || ev.kind === "failed") {
        r.state = ev.kind === "answer" ? "answered" : "rejected";
        r.status = ev.kind === "answer" ? ev.status : "failed";
        r.error = ev.error;
        r.duration_ms = ev.duration_ms;
        if (ev.usage) r.tokens = ev.usage.total_tokens;
        for (const t of r.tasks) if (t.state === "queued" || t.state === "running" || t.state === "retrying") t.state = "skipped";
        const text = ev.answer ?? "";
        answers.unshift({
          request: ev.request,
          status: r.status ?? "failed",
          at: ev.at,
          duration_ms: ev.duration_ms,
          usage: ev.usage,
          usage_by: ev.usage_by ?? [],
          answer: text.slice(0, ANSWER_CHARS),
          truncated: text.length > ANSWER_CHARS,
          error: ev.error,
        });
        answers.splice(o.maxAnswers);
      } else return; // accepted, assigned: nothing the page shows
      version++;
    },
    onTask(ev) {
      const r = get(ev.request, ev.at);
      if (r.state === "answered" || r.state === "rejected") return; // late events of a finished request
      if (r.state === "planning") r.state = "running";
      const t = taskOf(r, ev.task, ev.capability);
      t.node = ev.node;
      t.attempt = ev.attempt;
      if (ev.kind === "started") {
        t.state = "running";
        t.started_at = ev.at;
        t.ended_at = undefined;
        t.error = undefined;
      } else if (ev.kind === "progress") t.tokens = ev.tokens ?? t.tokens;
      else if (ev.kind === "retrying") {
        t.state = "retrying";
        t.error = ev.error;
      } else if (ev.kind === "completed" || ev.kind === "failed") {
        t.state = ev.kind;
        t.ended_at = ev.at;
        t.error = ev.error;
        t.tokens = ev.result?.usage.total_tokens ?? ev.tokens ?? t.tokens;
      } else return;
      sumTokens(r, planning.get(r.request));
      version++;
    },
    view(now = Date.now()) {
      const list = prune(now);
      return { requests: structuredClone(list), answers: structuredClone(answers) };
    },
    size: () => ({ requests: requests.size, tasks: [...requests.values()].reduce((n, r) => n + r.tasks.length, 0) }),
  };
}

/**
 * Subscribes `live` to every request and task event of the swarm; malformed ones are counted as bad input.
 * With `trusted` (signing on), an answer or rejection a trusted coordinator did not sign is refused
 * (counted), so the page never shows a forged answer.
 */
export function followSwarmRequests(
  nc: NatsConnection,
  names: SwarmNames,
  bad: BadInputCounter,
  live: LiveRequests,
  trusted?: ReadonlySet<string>,
): Subscription[] {
  return [
    nc.subscribe(names.requestEventsAll, {
      callback: (_e, msg) => {
        const d = decode(requestEventSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
        if (!d.ok) return bad.record(msg.subject, d.reason);
        const kind = d.value.kind;
        if (trusted && (kind === "answer" || kind === "failed" || kind === "answer_delta")) {
          const verdict = verifyAnswer(msg.subject, msg.data, msg.headers, trusted);
          if (!verdict.ok) return bad.refuse(msg.subject, "answer", `${kind}: ${verdict.reason}`);
        }
        live.onRequest(d.value);
      },
    }),
    ...[names.taskEventsAll, names.taskLiveAll].map((subject) =>
      nc.subscribe(subject, {
        callback: (_e, msg) => {
          const d = decode(taskEventSchema, msg.data, MAX_PIPELINE_MESSAGE_BYTES);
          if (d.ok) live.onTask(d.value);
          else bad.record(msg.subject, d.reason);
        },
      }),
    ),
  ];
}

/** What the web page receives on every update (`/events`, `/api/state`). */
export interface WebState {
  snapshot: DashboardSnapshot;
  live: LiveView;
  /** Tool calls waiting for a person; `decide`: the page may approve and deny (else `read_only` says why). */
  approvals: { calls: PendingRow[]; decide: boolean; read_only?: string };
}
