// Wire trace of swarm requests: a subscription on `>` sees every message that crosses the server
// (publishes, JetStream API calls and their replies, pulled deliveries, acks). From it, per request:
// the time of each step of the pipeline and how many round trips / stored writes it took.
import type { Msg, NatsConnection, Subscription } from "nats";
import type { SwarmNames } from "../../lib/subjects.ts";
import { mean, stat } from "./util.ts";

export interface WireMsg {
  t: number;
  subject: string;
  reply: string;
  size: number;
  kind?: string;
}

/** A message that asks for an answer (a publish awaiting its PubAck, an API call): not a pulled delivery. */
export const asks = (m: WireMsg) => m.reply !== "" && !m.reply.startsWith("$JS.ACK.");

export function startTrace(nc: NatsConnection, subject = ">"): { msgs: WireMsg[]; stop(): void; sub: Subscription } {
  const msgs: WireMsg[] = [];
  const dec = new TextDecoder();
  const sub = nc.subscribe(subject, {
    callback: (_e, m: Msg) => {
      const w: WireMsg = { t: performance.now(), subject: m.subject, reply: m.reply ?? "", size: m.data.length };
      if ((m.subject.includes(".event.") || m.subject.includes(".live.")) && m.data.length < 4096 && m.data.length > 0) {
        try {
          w.kind = (JSON.parse(dec.decode(m.data)) as { kind?: string }).kind;
        } catch {
          // not an event
        }
      }
      msgs.push(w);
    },
  });
  return { msgs, sub, stop: () => sub.unsubscribe() };
}

/** The pipeline's steps for a request with one sub-task, in order; each is a time (ms, performance.now). */
export const STEPS = [
  ["submitted", "request published to request.submit"],
  ["coordPulled", "coordinator pulled it (delivery from REQUESTS)"],
  ["recordWritten", "request record put in KV (status running)"],
  ["taskQueued", "sub-task published to task.queue.general.1"],
  ["taskDelivered", "worker pulled it (delivery from TASKS)"],
  ["started", "worker's `started` event (live)"],
  ["resultCreated", "worker's KV create of the result"],
  ["completed", "worker's `completed` event, with the result (live; reaches the coordinator)"],
  ["answerRecorded", "request record put in KV (status answered)"],
  ["leaseConfirmed", "KV get of the leader lease (confirm)"],
  ["answered", "answer event published"],
] as const;
export type Step = (typeof STEPS)[number][0];

export interface RequestTrace {
  steps: Partial<Record<Step, number>>;
  counts: Record<string, number>;
  /** Every message of the request's window: "+ms subject [reply] size". */
  wire: string[];
}

/** Splits a trace into request windows [submit_i, submit_i+1) and extracts steps and message counts. */
export function analyse(msgs: WireMsg[], names: SwarmNames, requests: { request: string; submittedAt: number }[]): RequestTrace[] {
  const tasksKv = `$KV.${names.buckets.tasks}.`;
  const directLeader = `$JS.API.DIRECT.GET.KV_${names.buckets.leader}.`;
  const leaderKv = `$KV.${names.buckets.leader}.`;
  const streamSubjects = [`${names.prefix}.request.`, `${names.prefix}.task.`, `${names.prefix}.event.`];
  const out: RequestTrace[] = [];
  for (let i = 0; i < requests.length; i++) {
    const { request: req, submittedAt } = requests[i]!;
    const end = requests[i + 1]?.submittedAt ?? Infinity;
    const win = msgs.filter((m) => m.t >= submittedAt && m.t < end);
    // Periodic traffic is not the request's: heartbeats, lease renewals, and the replies to them.
    const periodicReplies = new Set(
      win
        .filter((m) => m.subject.includes(".node.heartbeat.") || m.subject.startsWith(leaderKv))
        .map((m) => m.reply)
        .filter(Boolean),
    );
    const own = win.filter((m) => !m.subject.includes(".node.") && !m.subject.startsWith(leaderKv) && !periodicReplies.has(m.subject));
    const first = (p: (m: WireMsg) => boolean, after = -Infinity) => own.find((m) => m.t >= after && p(m));
    const s: Partial<Record<Step, number>> = {};
    const submit = first((m) => m.subject === names.requestSubmit && asks(m));
    s.submitted = submit?.t;
    s.coordPulled = first((m) => m.subject === names.requestSubmit && m.reply.startsWith(`$JS.ACK.${names.streams.requests}.`))?.t;
    const puts = own.filter((m) => m.subject === `${tasksKv}request.${req}`);
    s.recordWritten = puts[0]?.t;
    const queued = first((m) => m.subject.startsWith(`${names.prefix}.task.`) && asks(m));
    s.taskQueued = queued?.t;
    s.taskDelivered = first(
      (m) => m.subject.startsWith(`${names.prefix}.task.`) && m.reply.startsWith(`$JS.ACK.${names.streams.tasks}.`),
    )?.t;
    const taskEvents = own.filter(
      (m) => m.subject.startsWith(`${names.prefix}.event.task.${req}.`) || m.subject.startsWith(`${names.prefix}.live.task.${req}.`),
    );
    s.started = taskEvents.find((m) => m.kind === "started")?.t;
    s.resultCreated = first((m) => m.subject.startsWith(`${tasksKv}result.${req}.`))?.t;
    s.completed = taskEvents.find((m) => m.kind === "completed")?.t;
    s.answerRecorded = puts[1]?.t;
    s.leaseConfirmed = first((m) => m.subject.startsWith(directLeader))?.t;
    s.answered = own.find((m) => m.subject === names.requestEvents(req) && m.kind === "answer")?.t;

    // Counts. A message with a reply subject expects an answer: one round trip for its sender.
    const counts: Record<string, number> = {};
    const add = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
    const emptyReplies = new Set<string>();
    const replySubjects = new Set(own.filter(asks).map((m) => m.reply));
    const pullReplies = new Set(own.filter((m) => m.subject.startsWith("$JS.API.CONSUMER.MSG.NEXT.")).map((m) => m.reply));
    for (const m of own) {
      if (replySubjects.has(m.subject)) {
        if (pullReplies.has(m.subject) && m.size === 0) emptyReplies.add(m.subject);
        add("replies");
        continue;
      }
      if (asks(m)) add("round trips");
      if (m.reply.startsWith("$JS.ACK.")) add("pulled deliveries");
      else if (streamSubjects.some((p) => m.subject.startsWith(p))) add(m.reply ? "stream writes (publish + PubAck)" : "core publishes");
      else if (m.subject.startsWith(`${names.prefix}.live.`)) add("live publishes (never stored)");
      else if (m.subject.startsWith("$KV.")) add("KV writes");
      else if (m.subject.startsWith("$JS.API.DIRECT.GET.")) add("KV reads");
      else if (m.subject.startsWith("$JS.API.CONSUMER.MSG.NEXT.")) add("pull requests");
      else if (m.subject.startsWith("$JS.ACK.")) add("acks (no reply)");
      else if (m.subject.startsWith("$JS.")) add("other JetStream API");
      else add("other");
    }
    counts["pull requests that found nothing"] = emptyReplies.size;
    counts["messages through the server"] = own.length;
    const t0 = submit?.t ?? submittedAt;
    const wire = own.map(
      (m) => `+${(m.t - t0).toFixed(3)}ms ${m.subject}${m.reply ? ` reply=${m.reply}` : ""} ${m.size}B${m.kind ? ` kind=${m.kind}` : ""}`,
    );
    out.push({ steps: s, counts, wire });
  }
  return out;
}

/** Median gap between consecutive steps, and the median count of each kind of message. */
export function summarise(traces: RequestTrace[]) {
  const gaps: { step: Step; what: string; ms: number; n: number }[] = [];
  for (let i = 1; i < STEPS.length; i++) {
    const [step, what] = STEPS[i]!;
    const prev = STEPS[i - 1]![0];
    const xs = traces.map((t) => (t.steps[step] ?? NaN) - (t.steps[prev] ?? NaN)).filter(Number.isFinite);
    gaps.push({ step, what, ms: stat(xs).median, n: xs.length });
  }
  const keys = [...new Set(traces.flatMap((t) => Object.keys(t.counts)))];
  const counts = Object.fromEntries(keys.map((k) => [k, mean(traces.map((t) => t.counts[k] ?? 0))]));
  return { gaps, counts };
}
