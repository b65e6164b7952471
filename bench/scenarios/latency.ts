// Scenarios 1 and 2: one no-op sub-task dispatched and its result back (÷ 2-hop relay), and a whole
// request submit -> answer (÷ 1-hop request/reply, and ÷ BullMQ add -> complete).
import { bullLatency } from "../lib/bull.ts";
import { oneHop, twoHops } from "../lib/nats-baselines.ts";
import { type Submitted, startBenchSwarm, swarmClient } from "../lib/swarm.ts";
import { analyse, asks, type RequestTrace, STEPS, startTrace, summarise } from "../lib/trace.ts";
import { type BenchContext, type Row, redisOf, type Scenario, type ScenarioResult } from "../lib/types.ts";
import { envInt, fmt, pct, progress, stat } from "../lib/util.ts";

const N = envInt("LATENCY_N", 500);
const TRACE_N = Math.min(N, envInt("TRACE_N", 50));
const WARMUP = 20;

interface Round {
  hop1: { p50: number; p99: number; rate: number };
  hop2: { p50: number; p99: number };
  bull: { p50: number; p99: number };
  request: { p50: number; p99: number; over500ms: number };
  dispatch: { p50: number; p99: number };
}

async function swarmRound(ctx: BenchContext, r: number) {
  const s = await startBenchSwarm({ natsUrl: ctx.nats.url, hid: ctx.hid(`lat${r}`), workers: 1, workerSlots: 32, coordinatorSlots: 128 });
  const client = swarmClient(ctx.nc, s.names);
  try {
    for (let i = 0; i < WARMUP; i++) await client.submit("noop");
    // Pass 1, untraced: submit -> answer as a user sees it (scenario 2).
    const whole: number[] = [];
    for (let i = 0; i < N; i++) {
      const x = await client.submit("noop");
      whole.push(x.answeredAt - x.submittedAt);
    }
    // Pass 2, narrow trace (scenario 1): the sub-task's publish, and the worker's `completed` event,
    // which carries the recorded result to the coordinator (the bench sees it when the coordinator
    // does: both subscribe to it). Only those subjects are copied to the bench.
    const queued = startTrace(ctx.nc, s.names.taskQueue("general", 1));
    const events = startTrace(ctx.nc, s.names.taskLiveAll);
    await ctx.nc.flush();
    const dispatch: number[] = [];
    for (let i = 0; i < N; i++) {
      queued.msgs.length = events.msgs.length = 0;
      const x = await client.submit("noop");
      await Bun.sleep(1);
      const pub = queued.msgs.find(asks);
      const done = events.msgs.find((m) => m.kind === "completed" && m.subject.includes(`.${x.request}.`));
      if (pub && done) dispatch.push(done.t - pub.t);
    }
    if (dispatch.length < N / 2) throw new Error(`saw only ${dispatch.length} of ${N} sub-tasks from publish to completed event`);
    queued.stop();
    events.stop();
    // Pass 3, full trace of everything on the server: where a request's time goes, and what it costs.
    const full = startTrace(ctx.nc, ">");
    await ctx.nc.flush();
    const submitted: Submitted[] = [];
    for (let i = 0; i < TRACE_N; i++) {
      submitted.push(await client.submit("noop"));
      await Bun.sleep(5); // let the tail (acks, PubAcks) land in this request's window
    }
    await Bun.sleep(20);
    full.stop();
    const traces = analyse(
      full.msgs,
      s.names,
      submitted.map((x) => ({ request: x.request, submittedAt: x.submittedAt })),
    );
    return {
      request: { p50: pct(whole, 50), p99: pct(whole, 99), over500ms: whole.filter((x) => x > 500).length },
      dispatch: { p50: pct(dispatch, 50), p99: pct(dispatch, 99), n: dispatch.length },
      traces,
      wholeAnswered: submitted.map((x) => x.answeredAt),
    };
  } finally {
    client.close();
    await s.stop();
  }
}

/** The traced request whose submit -> answer time is the median: its wire log goes into the JSON file. */
function medianTrace(traces: RequestTrace[]): RequestTrace | undefined {
  const total = (t: RequestTrace) => (t.steps.answered ?? Infinity) - (t.steps.submitted ?? 0);
  const sorted = traces.filter((t) => Number.isFinite(total(t))).sort((a, b) => total(a) - total(b));
  return sorted[Math.floor(sorted.length / 2)];
}

export const latency: Scenario = {
  id: "latency",
  title: "1-2: sub-task dispatch and request latency",
  needs: ["redis"],
  async run(ctx): Promise<ScenarioResult> {
    const rounds: Round[] = [];
    const traces: RequestTrace[] = [];
    for (let r = 0; r < ctx.rounds; r++) {
      progress(`  latency round ${r + 1}/${ctx.rounds}: baselines`);
      const hop1 = await oneHop(ctx.nc, ctx.nats.url, `lat${r}`, N, 50, 5_000);
      const hop2 = await twoHops(ctx.nc, ctx.nats.url, `lat${r}`, N, 50);
      const bull = await bullLatency(redisOf(ctx), `bench-lat-${r}`, N, WARMUP);
      progress(", swarm\n");
      const sw = await swarmRound(ctx, r);
      traces.push(...sw.traces);
      rounds.push({ hop1, hop2, bull, request: sw.request, dispatch: sw.dispatch });
    }
    const col = (f: (x: Round) => number) => stat(rounds.map(f));
    const ms = (f: (x: Round) => number, d = 2) => fmt(col(f), "ms", d);
    const ratio = (f: (x: Round) => number) => fmt(col(f), "×", 1);
    const reqOver1 = col((x) => x.request.p50 / x.hop1.p50);
    const dispatchOver2 = col((x) => x.dispatch.p50 / x.hop2.p50);
    const rows: Row[] = [
      {
        group: "baseline",
        name: "raw NATS request/reply, 1 hop",
        figure: `p50 ${ms((x) => x.hop1.p50, 3)}  p99 ${ms((x) => x.hop1.p99, 3)}`,
        ratio: "1.0×",
      },
      {
        group: "baseline",
        name: "raw NATS request/reply, 1 hop, 64 in flight",
        figure: fmt(
          col((x) => x.hop1.rate),
          "/s",
          0,
        ),
        ratio: "(transport ceiling)",
      },
      {
        group: "baseline",
        name: "raw NATS request/reply, 2 hops via relay process",
        figure: `p50 ${ms((x) => x.hop2.p50, 3)}  p99 ${ms((x) => x.hop2.p99, 3)}`,
        ratio: `${ratio((x) => x.hop2.p50 / x.hop1.p50)} of 1 hop`,
      },
      {
        group: "baseline",
        name: "BullMQ add → completed (QueueEvents), 1 worker",
        figure: `p50 ${ms((x) => x.bull.p50)}  p99 ${ms((x) => x.bull.p99)}`,
        ratio: `${ratio((x) => x.bull.p50 / x.hop1.p50)} of 1 hop`,
      },
      {
        group: "1 dispatch",
        name: "sub-task queued → result at coordinator (1 worker)",
        figure: `p50 ${ms((x) => x.dispatch.p50)}  p99 ${ms((x) => x.dispatch.p99)}`,
        ratio: `p50 ${fmt(dispatchOver2, "×", 1)}  p99 ${ratio((x) => x.dispatch.p99 / x.hop2.p99)} of 2 hops`,
        target: "p50 ≤ 1.25× 2 hops (issue)",
        verdict: dispatchOver2.median <= 1.25 ? "met" : "MISSED",
      },
      {
        group: "2 request",
        name: "submit → answer, 1 no-op sub-task (1 worker)",
        figure: `p50 ${ms((x) => x.request.p50)}  p99 ${ms((x) => x.request.p99)}`,
        ratio: `p50 ${fmt(reqOver1, "×", 1)}  p99 ${ratio((x) => x.request.p99 / x.hop1.p99)} of 1 hop`,
        target: "p50 ≤ 3× 1 hop (issue, §12)",
        verdict: reqOver1.median <= 3 ? "met" : "MISSED",
      },
    ];
    const sum = summarise(traces);
    const c = (k: string) => sum.counts[k] ?? 0;
    rows.push({
      group: "2 request",
      name: "  same, ÷ BullMQ add → completed",
      figure: "",
      ratio: `p50 ${ratio((x) => x.request.p50 / x.bull.p50)}  p99 ${ratio((x) => x.request.p99 / x.bull.p99)} of BullMQ`,
    });
    rows.push({
      group: "2 request",
      name: "  wire cost of that request (full trace)",
      figure: `${c("round trips").toFixed(0)} round trips; ${c("stream writes (publish + PubAck)").toFixed(0)} stream + ${c("KV writes").toFixed(0)} KV writes, ${c("KV reads").toFixed(0)} KV reads; ${c("messages through the server").toFixed(0)} msgs`,
      ratio: `${c("round trips").toFixed(0)}× the round trips of 1 hop`,
    });
    const notes = [
      `Requests slower than 500 ms in the untraced pass, per round (of ${N}): ${rounds.map((x) => x.request.over500ms).join(", ")} (≈ 1 s each: see "Stalls" in bench/README.md).`,
      `Where one request's time goes (full wire trace, ${traces.length} sequential requests, median gap before each step; the trace itself slows the pipeline):`,
      ...sum.gaps.map(
        (g) =>
          `  ${g.ms.toFixed(3).padStart(7)} ms  → ${STEPS.find((s) => s[0] === g.step)![1]}${g.n < traces.length ? ` (seen in ${g.n})` : ""}`,
      ),
      `  ${stat(traces.map((t) => (t.steps.answered ?? NaN) - (t.steps.submitted ?? NaN)).filter(Number.isFinite))
        .median.toFixed(3)
        .padStart(7)} ms  = submitted → answer event (traced)`,
      "Messages through the server per request (mean):",
      ...Object.entries(sum.counts)
        .filter(([, v]) => v >= 0.05)
        .map(([k, v]) => `  ${v.toFixed(1).padStart(5)}  ${k}`),
    ];
    return {
      id: "latency",
      rows,
      rounds: rounds as unknown as Record<string, unknown>[],
      notes,
      extra: { trace_summary: sum, example_request_wire: medianTrace(traces)?.wire },
    };
  },
};
