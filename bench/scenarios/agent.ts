// Scenario 8: an agent sub-task of 20 tool calls of a no-op tool (the built-in list_dir on an empty
// workspace) against an instant scripted LLM server: the time per tool call in the swarm (one worker
// running the sub-task's tool loop, every step recorded) against the same loop in one process without
// NATS (bench/helpers/agent-loop.ts), and the stored writes the swarm adds per tool call.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "nats";
import { decode } from "../../lib/messages.ts";
import { type SwarmNames, taskKeys } from "../../lib/subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type TaskResult, taskEventSchema } from "../../lib/task-messages.ts";
import { type ChatRequestBody, startLlmServer } from "../../test/helpers/llm-server.ts";
import { type Submitted, startBenchSwarm, swarmClient } from "../lib/swarm.ts";
import { analyse, startTrace, type WireMsg } from "../lib/trace.ts";
import type { BenchContext, Row, Scenario, ScenarioResult } from "../lib/types.ts";
import { BENCH_DIR, cpuMeter, envInt, fmt, pct, progress, spawnChild, stat, until } from "../lib/util.ts";

/** Sub-tasks per figure and round (each of CALLS tool calls). */
const N = envInt("AGENT_N", 10);
const CALLS = envInt("AGENT_CALLS", 20);
const WARMUP = 3;
/** Idle window per swarm round: the processes' idle CPU rate, subtracted from the measured batches. */
const IDLE_MS = 2_000;
/** Agent sub-tasks traced on the wire per round (where a tool call's time goes). */
const TRACED = 5;
const MARKER = "<agent-bench:";
const TOOL = { name: "list_dir", arguments: JSON.stringify({ path: "." }) };
const prompt = (tag: string) => `${MARKER}${tag}> List the workspace ${CALLS} times, one call per turn, then say how often you did.`;

/** Streams whose writes are not the requests': heartbeats (NODES) and the leader lease's renewals. */
const PERIODIC = new Set(["NODES", "leader KV"]);

type Texts = NonNullable<ChatRequestBody["messages"]>;
const userText = (b: ChatRequestBody) => String((b.messages ?? []).find((m) => m.role === "user")?.content ?? "");
const toolResults = (m: Texts) => m.filter((x) => x.role === "tool").length;

/** Arrival of each scripted model call at the server (performance.now, in the bench process). */
interface Arrival {
  tag: string;
  tools: number;
  t: number;
}

interface Side {
  /** p50 over the sub-tasks of the round: whole loop ÷ CALLS (ms per tool call). */
  perCall: number;
  /** p50 of the whole loop (ms). */
  total: number;
  /** p50 of (arrival of the last model call − arrival of the first) ÷ CALLS, on the server's clock. */
  serverPerCall: number;
  /** One process only: p50 per loop ÷ CALLS of the time in model calls and in the tool. */
  modelPerCall?: number;
  toolPerCall?: number;
  /** CPU ms per tool call: the helper process (one process), or per swarm process (agent − plain requests). */
  cpuPerCall: Record<string, number>;
}

interface Round {
  base: Side;
  swarm: Side;
  /** Stored writes per request by stream: requests whose sub-task calls no tool, and agent requests. */
  writesPlain: Record<string, number>;
  writesAgent: Record<string, number>;
  /** Heartbeats (NODES) per request whose sub-task calls no tool, beyond the periodic ones of its time. */
  heartbeatsPlain: number;
  /** Wire trace of one plain and one agent request: counts by kind, agent − plain, per tool call. */
  tracePerCall: Record<string, number>;
  /** Where one tool call's time goes in the swarm (traced agent request): median gaps, ms. */
  gaps: Record<Gap, number>;
}

/**
 * The legs of one tool call in the worker's loop, as the bench sees them (LLM server and wire on one
 * clock). `list_dir` is replay-safe: its turn is recorded once, with its result, after the call ran, and
 * the loop does not wait for that write's PubAck before it asks the model again (lib/steps.ts).
 */
const GAPS = [
  ["turn", "model call arrives → its turn step's KV create reaches the server (response streamed and parsed, list_dir run)"],
  ["next", "→ the next model call arrives (request built and sent; the step's PubAck not awaited)"],
] as const;
type Gap = (typeof GAPS)[number][0];

/** Per tool call i of each traced loop: model call i's arrival, the KV create of step i+1, model call i+1's arrival. */
function loopGaps(msgs: WireMsg[], arrivals: Arrival[], names: SwarmNames, loops: { request: string; tag: string }[]): Record<Gap, number> {
  const xs: Record<Gap, number[]> = { turn: [], next: [] };
  for (const { request, tag } of loops) {
    const at = arrivals.filter((a) => a.tag === tag);
    const call = (i: number) => at.find((a) => a.tools === i)?.t ?? NaN;
    const key = (n: number) => `$KV.${names.buckets.tasks}.${taskKeys.step(request, "t0", n)}`;
    const step = (n: number) => msgs.find((m) => m.subject === key(n) && m.reply)?.t ?? NaN;
    for (let i = 0; i < CALLS; i++) {
      const t = step(i + 1);
      xs.turn.push(t - call(i));
      xs.next.push(call(i + 1) - t);
    }
  }
  const med = (v: number[]) => stat(v.filter(Number.isFinite)).median;
  return { turn: med(xs.turn), next: med(xs.next) };
}

/** Per loop of `tag`: (arrival of the call after the last tool result − arrival of the first call) ÷ CALLS. */
function serverPerCall(arrivals: Arrival[], tag: string): number[] {
  const out: number[] = [];
  let first: number | undefined;
  for (const a of arrivals) {
    if (a.tag !== tag) continue;
    if (a.tools === 0) first = a.t;
    else if (a.tools === CALLS && first !== undefined) {
      out.push((a.t - first) / CALLS);
      first = undefined;
    }
  }
  return out;
}

function side(totals: number[], server: number[], cpuPerCall: Record<string, number>): Side {
  return { perCall: pct(totals, 50) / CALLS, total: pct(totals, 50), serverPerCall: pct(server, 50), cpuPerCall };
}

/** The last sequence number of each of the swarm's streams: every message ever stored in it. */
async function storedSeqs(nc: NatsConnection, names: SwarmNames): Promise<Record<string, number>> {
  const jsm = await nc.jetstreamManager();
  const streams: Record<string, string> = {
    REQUESTS: names.streams.requests,
    TASKS: names.streams.tasks,
    EVENTS: names.streams.events,
    NODES: names.streams.nodes,
    "tasks KV": `KV_${names.buckets.tasks}`,
    "context KV": `KV_${names.buckets.context}`,
    "tokens KV": `KV_${names.buckets.tokens}`,
    "leader KV": `KV_${names.buckets.leader}`,
    "answers store": `OBJ_${names.buckets.answers}`,
  };
  const out: Record<string, number> = {};
  for (const [k, name] of Object.entries(streams)) {
    out[k] = await jsm.streams.info(name).then(
      (i) => i.state.last_seq,
      () => 0, // not created (yet)
    );
  }
  return out;
}

/** CPU ms per wall ms of each process. */
const rate = (cpu: Record<string, number>, ms: number) => Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, v / ms]));
/** CPU ms of each process over `ms`, less what it spends idle in that time. */
const busy = (cpu: Record<string, number>, idle: Record<string, number>, ms: number) =>
  Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, v - (idle[k] ?? 0) * ms]));

const perRequest = (before: Record<string, number>, after: Record<string, number>, n: number) =>
  Object.fromEntries(Object.keys(after).map((k) => [k, (after[k]! - (before[k] ?? 0)) / n]));
const counted = (w: Record<string, number>) =>
  Object.entries(w)
    .filter(([k]) => !PERIODIC.has(k))
    .reduce((a, [, v]) => a + v, 0);

async function baselineRound(url: string, workspace: string, tag: string, arrivals: Arrival[]): Promise<Side> {
  const c = spawnChild(["bun", join(BENCH_DIR, "helpers", "agent-loop.ts"), url, workspace, String(WARMUP), String(N), prompt(tag)]);
  try {
    await c.waitLine(/^result /, 120_000);
  } finally {
    await c.stop();
  }
  const line = c.lines.find((l) => l.text.startsWith("result "))!.text;
  const r = JSON.parse(line.slice("result ".length)) as {
    totals: number[];
    calls: number[];
    model: number[];
    tool: number[];
    cpuMs: number;
  };
  if (r.calls.some((n) => n !== CALLS)) throw new Error(`baseline loops made ${r.calls.join(",")} tool calls, not ${CALLS} each`);
  return {
    ...side(r.totals, serverPerCall(arrivals, tag).slice(WARMUP), { "one process": r.cpuMs / (N * CALLS) }),
    modelPerCall: pct(r.model, 50) / CALLS,
    toolPerCall: pct(r.tool, 50) / CALLS,
  };
}

async function swarmRound(ctx: BenchContext, r: number, url: string, home: string, arrivals: Arrival[]) {
  const workspace = join(home, "swarm-ws");
  mkdirSync(workspace, { recursive: true });
  const s = await startBenchSwarm({
    natsUrl: ctx.nats.url,
    hid: ctx.hid(`agent${r}`),
    workers: 1,
    workerSlots: 4,
    coordinatorSlots: 8,
    workerArgs: ["--agents.defaults.workspace", workspace, "--agents.defaults.max_tool_iterations", String(CALLS + 5)],
    workerEnv: {
      PICOCLAW_LLM_PROVIDER: "openai",
      PICOCLAW_LLM_BASE_URL: url,
      PICOCLAW_LLM_MODEL: "test-model",
      PICOCLAW_LLM_API_KEY: "bench",
    },
  });
  const client = swarmClient(ctx.nc, s.names);
  // Each sub-task's recorded result comes with its `completed` event: the worker's own start and end.
  const results = new Map<string, TaskResult>();
  const events = ctx.nc.subscribe(s.names.taskLiveAll, {
    callback: (_e, m) => {
      const d = decode(taskEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (d.ok && d.value.kind === "completed" && d.value.result) results.set(d.value.request, d.value.result);
    },
  });
  const one = (text: string) => client.submit(text, { tasks: [{ id: "t0", capability: "general", prompt: text }] });
  const plainText = (i: number) => `agent bench round ${r}: answer at once (${i})`;
  try {
    for (let i = 0; i < WARMUP; i++) {
      await one(prompt(`swarm-warm${r}`));
      await one(plainText(-1 - i));
    }
    // CPU of the swarm's processes while idle (heartbeats, lease renewals, timers), taken out of each batch.
    const meter = () => cpuMeter({ worker: [s.workers[0]!.pid], coordinator: [s.coordinator.pid], "nats-server": [ctx.nats.proc.pid] });
    let m = await meter();
    let t0 = performance.now();
    await Bun.sleep(IDLE_MS);
    const idle = rate(await m(), performance.now() - t0);
    // Stored writes (and CPU) of requests whose sub-task calls no tool: what an agent request costs anyway.
    const p0 = await storedSeqs(ctx.nc, s.names);
    m = await meter();
    t0 = performance.now();
    for (let i = 0; i < N; i++) await one(plainText(i));
    const plainMs = performance.now() - t0;
    const cpuPlain = busy(await m(), idle, plainMs);
    const p1 = await storedSeqs(ctx.nc, s.names);
    // Two nodes beat every second anyway: what is left over was triggered by the requests.
    const periodic = (2 * plainMs) / 1_000;
    const heartbeatsPlain = Math.max(0, (p1.NODES ?? 0) - (p0.NODES ?? 0) - periodic) / N;
    // Agent requests: timed by the worker (result started_at → finished_at), writes counted around them.
    const tag = `swarm${r}`;
    const agent: Submitted[] = [];
    m = await meter();
    t0 = performance.now();
    for (let i = 0; i < N; i++) agent.push(await one(prompt(tag)));
    const cpuAgent = busy(await m(), idle, performance.now() - t0);
    await until("every agent sub-task's completed event", () => agent.every((x) => results.has(x.request)), 10_000);
    const a1 = await storedSeqs(ctx.nc, s.names);
    const own = agent.map((x) => results.get(x.request)!);
    const bad = own.filter((x) => x.tool_calls?.length !== CALLS);
    if (bad.length) throw new Error(`agent sub-tasks made ${bad.map((x) => x.tool_calls?.length ?? 0).join(",")} tool calls, not ${CALLS}`);
    const totals = own.map((x) => x.finished_at - x.started_at);
    // One plain and one agent request traced on the wire: messages per tool call, and where its time goes.
    const trace = startTrace(ctx.nc, ">");
    await ctx.nc.flush();
    const traced: Submitted[] = [];
    traced.push(await one(plainText(N)));
    await Bun.sleep(20);
    for (let i = 0; i < TRACED; i++) {
      traced.push(await one(prompt(`trace${r}-${i}`)));
      await Bun.sleep(20);
    }
    trace.stop();
    const [tp, ta] = analyse(
      trace.msgs,
      s.names,
      traced.map((x) => ({ request: x.request, submittedAt: x.submittedAt })),
    );
    const kinds = [...new Set([...Object.keys(tp!.counts), ...Object.keys(ta!.counts)])];
    const tracePerCall = Object.fromEntries(kinds.map((k) => [k, ((ta!.counts[k] ?? 0) - (tp!.counts[k] ?? 0)) / CALLS]));
    const gaps = loopGaps(
      trace.msgs,
      arrivals,
      s.names,
      traced.slice(1).map((x, i) => ({ request: x.request, tag: `trace${r}-${i}` })),
    );
    return {
      side: side(
        totals,
        serverPerCall(arrivals, tag),
        Object.fromEntries(Object.keys(cpuAgent).map((k) => [k, (cpuAgent[k]! - cpuPlain[k]!) / (N * CALLS)])),
      ),
      writesPlain: perRequest(p0, p1, N),
      writesAgent: perRequest(p1, a1, N),
      heartbeatsPlain,
      tracePerCall,
      gaps,
    };
  } finally {
    events.unsubscribe();
    client.close();
    await s.stop();
  }
}

export const agent: Scenario = {
  id: "agent",
  title: `8: agent sub-task of ${CALLS} no-op tool calls, instant LLM`,
  async run(ctx): Promise<ScenarioResult> {
    const arrivals: Arrival[] = [];
    const server = await startLlmServer({
      respond: (b) => {
        const text = userText(b);
        const at = text.indexOf(MARKER);
        if (at < 0) return undefined; // a plain sub-task: one text answer, no tool call
        const tag = text.slice(at + MARKER.length, text.indexOf(">", at));
        const tools = toolResults(b.messages ?? []);
        arrivals.push({ tag, tools, t: performance.now() });
        return tools < CALLS ? { tool_calls: [TOOL] } : `listed the workspace ${tools} times`;
      },
    });
    const home = mkdtempSync(join(tmpdir(), "picoclaw-bench-agent-"));
    const baseWs = join(home, "base-ws");
    mkdirSync(baseWs, { recursive: true });
    const rounds: Round[] = [];
    try {
      for (let r = 0; r < ctx.rounds; r++) {
        progress(`  agent round ${r + 1}/${ctx.rounds}: one process`);
        const base = await baselineRound(server.url, baseWs, `base${r}`, arrivals);
        progress(", swarm\n");
        const sw = await swarmRound(ctx, r, server.url, home, arrivals);
        rounds.push({
          base,
          swarm: sw.side,
          writesPlain: sw.writesPlain,
          writesAgent: sw.writesAgent,
          heartbeatsPlain: sw.heartbeatsPlain,
          tracePerCall: sw.tracePerCall,
          gaps: sw.gaps,
        });
        arrivals.length = 0;
      }
    } finally {
      await server.stop();
      rmSync(home, { recursive: true, force: true });
    }
    const col = (f: (x: Round) => number) => stat(rounds.map(f));
    const added = col((x) => x.swarm.perCall - x.base.perCall);
    const addedWrites = (x: Round) => (counted(x.writesAgent) - counted(x.writesPlain)) / CALLS;
    const writes = col(addedWrites);
    const perPlainRequest = col((x) => counted(x.writesPlain) + x.heartbeatsPlain);
    const byStream = (x: Round) =>
      Object.entries(x.writesAgent)
        .filter(([k]) => !PERIODIC.has(k))
        .map(([k, v]) => [k, (v - (x.writesPlain[k] ?? 0)) / CALLS] as const)
        .filter(([, v]) => Math.abs(v) >= 0.005);
    const streams = [...new Set(rounds.flatMap((x) => byStream(x).map(([k]) => k)))];
    const rows: Row[] = [
      {
        group: "baseline",
        name: `agent loop in one process, ${CALLS} no-op tool calls`,
        figure: `p50 ${fmt(
          col((x) => x.base.perCall),
          "ms",
          3,
        )} per tool call (loop ${fmt(
          col((x) => x.base.total),
          "ms",
          1,
        )})`,
        ratio: "1.00×",
      },
      {
        group: "8 agent",
        name: `sub-task of ${CALLS} no-op tool calls, 1 worker`,
        figure: `p50 ${fmt(
          col((x) => x.swarm.perCall),
          "ms",
          3,
        )} per tool call (sub-task ${fmt(
          col((x) => x.swarm.total),
          "ms",
          1,
        )})`,
        ratio: `adds ${fmt(added, "ms", 3)} per tool call; ${fmt(
          col((x) => x.swarm.perCall / x.base.perCall),
          "×",
          2,
        )} of one process`,
        target: "≤ +1 ms per step (tool call) at p50 (issue)",
        verdict: added.median <= 1 ? "met" : "MISSED",
      },
      {
        group: "8 agent",
        name: "  stored writes added per tool call",
        figure: `${fmt(writes, "", 2)} per tool call = ${fmt(
          col((x) => addedWrites(x) / 2),
          "",
          2,
        )} per recorded step (turn or tool result)`,
        ratio: streams.map((k) => `${k} ${fmt(stat(rounds.map((x) => byStream(x).find(([s]) => s === k)?.[1] ?? 0)), "", 2)}`).join(", "),
        target: "≤ 1 per step (tool call) (issue)",
        verdict: writes.median <= 1 ? "met" : "MISSED",
      },
      {
        group: "8 agent",
        name: "stored writes per 1-sub-task request (no tool call)",
        figure: `${fmt(perPlainRequest, "", 1)}: ${fmt(
          col((x) => counted(x.writesPlain)),
          "",
          1,
        )} in streams and buckets + ${fmt(
          col((x) => x.heartbeatsPlain),
          "",
          1,
        )} heartbeats it triggers`,
        ratio: [...new Set(rounds.flatMap((x) => Object.keys(x.writesPlain)))]
          .filter((k) => !PERIODIC.has(k) && rounds.some((x) => (x.writesPlain[k] ?? 0) > 0))
          .map((k) => `${k} ${fmt(stat(rounds.map((x) => x.writesPlain[k] ?? 0)), "", 1)}`)
          .join(", "),
        target: "≤ 4 (issue, protocol v2)",
        verdict: perPlainRequest.median <= 4 ? "met" : "MISSED",
      },
    ];
    const traceKinds: [string, string][] = [
      ["round trips", "round trips"],
      ["KV writes", "KV writes"],
      ["core publishes", "plain publishes to stored subjects (`tool` events)"],
      ["messages through the server", "messages through the server"],
    ];
    const notes = [
      `Agent loop: ${N} sub-tasks per round, each ${CALLS} model turns asking for one ${TOOL.name} call and a last turn that answers (${CALLS + 1} LLM calls).`,
      `  per tool call = whole loop ÷ ${CALLS}: one process from the helper's clock, swarm from the result's started_at → finished_at (the worker's clock, 1 ms resolution).`,
      `  On the LLM server's clock (first call → the call after the last tool result, ÷ ${CALLS}): one process ${fmt(
        col((x) => x.base.serverPerCall),
        "ms",
        3,
      )}, swarm ${fmt(
        col((x) => x.swarm.serverPerCall),
        "ms",
        3,
      )} per tool call.`,
      `  Stored writes per request (all streams but NODES and the leader lease): no tool call ${fmt(
        col((x) => counted(x.writesPlain)),
        "",
        1,
      )}, ${CALLS} tool calls ${fmt(
        col((x) => counted(x.writesAgent)),
        "",
        1,
      )}.`,
      `  Wire trace of one agent request − one plain request, per tool call: ${traceKinds
        .map(
          ([k, label]) =>
            `${label} ${fmt(
              col((x) => x.tracePerCall[k] ?? 0),
              "",
              2,
            )}`,
        )
        .join("; ")}.`,
      `  Where one tool call's time goes in the swarm (${TRACED} traced sub-tasks, median per tool call; the LLM server and the wire trace share the bench's clock; the trace slows it a little):`,
      ...GAPS.map(
        ([k, what]) =>
          `    ${fmt(
            col((x) => x.gaps[k]),
            "ms",
            3,
          )}  ${what}`,
      ),
      `  CPU per tool call (/proc; swarm: agent requests − plain requests, ÷ tool calls; idle CPU taken out; the LLM server, in the bench, is left out of both): one process ${fmt(
        col((x) => x.base.cpuPerCall["one process"] ?? NaN),
        "ms",
        3,
      )}; swarm ${["worker", "coordinator", "nats-server"]
        .map(
          (k) =>
            `${k} ${fmt(
              col((x) => x.swarm.cpuPerCall[k] ?? NaN),
              "ms",
              3,
            )}`,
        )
        .join(", ")}.`,
      `  One process, per tool call: model call (request sent → stream drained) ${fmt(
        col((x) => x.base.modelPerCall ?? NaN),
        "ms",
        3,
      )}, list_dir ${fmt(
        col((x) => x.base.toolPerCall ?? NaN),
        "ms",
        3,
      )}, the rest of the loop ${fmt(
        col((x) => x.base.perCall - (x.base.modelPerCall ?? NaN) - (x.base.toolPerCall ?? NaN)),
        "ms",
        3,
      )}.`,
    ];
    return { id: "agent", rows, rounds: rounds as unknown as Record<string, unknown>[], notes };
  },
};
