// Scenario 4: fan-out of N simulated LLM calls (the OpenAI-compatible test server, fixed delays from
// 200 ms to 1 s), an explicit plan of N independent sub-tasks on enough slots to run all at once.
// makespan ÷ critical-path work -> orchestration overhead. Baseline: the same N calls made directly
// from the bench with the same SDK, all at once.
import OpenAI from "openai";
import { type LlmServer, type RecordedRequest, startLlmServer } from "../../test/helpers/llm-server.ts";
import { startBenchSwarm, swarmClient } from "../lib/swarm.ts";
import type { Row, Scenario, ScenarioResult } from "../lib/types.ts";
import { envList, fmt, progress, stat } from "../lib/util.ts";

const FANOUTS = envList("FANOUTS", [4, 16, 64]);
const MIN_DELAY = 200;
const MAX_DELAY = 1_000;
const WORKERS = 4;

/** Fixed, evenly spread delays from 200 ms to 1 s: the longest one is the critical path. */
const delays = (n: number) =>
  Array.from({ length: n }, (_, i) => Math.round(MIN_DELAY + (n === 1 ? 0 : ((MAX_DELAY - MIN_DELAY) * i) / (n - 1))));
const prompt = (tag: string, i: number, delay: number) => `[[delay=${delay}]] [[tokens=8]] bench fan-out ${tag} call ${i}`;

interface Run {
  makespan: number;
  work: number;
  nominal: number;
  overlap: number;
  calls: number;
  /** When the first and the last LLM call arrived at the server, ms after the submit (dispatch spread). */
  firstCall: number;
  lastCall: number;
  /** When the last call ended, ms after the submit. */
  lastEnd: number;
}

/** Wall-clock (Date.now) time of a performance.now() reading. */
const wall = (perf: number) => perf + (Date.now() - performance.now());

/** Server-side durations of the calls carrying `tag`: the critical path is the longest one. */
function measure(server: LlmServer, tag: string, startedAt: number, makespan: number): Run {
  const mine = server.requests.filter((r) => r.body.messages?.some((m) => m.role === "user" && m.content.includes(`fan-out ${tag} `)));
  const span = (r: RecordedRequest) => (r.endedAt ?? NaN) - r.at;
  const work = Math.max(...mine.map(span));
  const t0 = wall(startedAt);
  const ats = mine.map((r) => r.at - t0);
  return {
    makespan,
    work,
    nominal: MAX_DELAY,
    overlap: maxOverlap(mine),
    calls: mine.length,
    firstCall: Math.min(...ats),
    lastCall: Math.max(...ats),
    lastEnd: Math.max(...mine.map((r) => (r.endedAt ?? NaN) - t0)),
  };
}

function maxOverlap(rs: RecordedRequest[]): number {
  const points = rs.flatMap(
    (r) =>
      [
        [r.at, 1],
        [r.endedAt ?? r.at, -1],
      ] as [number, number][],
  );
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let cur = 0;
  let max = 0;
  for (const [, d] of points) {
    cur += d;
    max = Math.max(max, cur);
  }
  return max;
}

async function direct(server: LlmServer, tag: string, n: number): Promise<Run> {
  const client = new OpenAI({ baseURL: server.url, apiKey: "bench", maxRetries: 0 });
  const t0 = performance.now();
  await Promise.all(
    delays(n).map(async (d, i) => {
      const stream = await client.chat.completions.create({
        model: "test-model",
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: "user", content: prompt(tag, i, d) }],
      });
      for await (const _ of stream) {
        /* drain */
      }
    }),
  );
  return measure(server, tag, t0, performance.now() - t0);
}

export const fanout: Scenario = {
  id: "fanout",
  title: "4: fan-out of simulated LLM calls",
  async run(ctx): Promise<ScenarioResult> {
    const server = await startLlmServer();
    const rounds: { direct: Record<number, Run>; swarm: Record<number, Run> }[] = [];
    try {
      for (let r = 0; r < ctx.rounds; r++) {
        progress(`  fan-out round ${r + 1}/${ctx.rounds}:`);
        const s = await startBenchSwarm({
          natsUrl: ctx.nats.url,
          hid: ctx.hid(`fan${r}`),
          workers: WORKERS,
          workerSlots: Math.ceil(Math.max(...FANOUTS) / WORKERS),
          coordinatorSlots: 8,
          coordinatorArgs: ["--swarm.tasks.max_fanout", "64"],
          workerEnv: {
            PICOCLAW_LLM_PROVIDER: "openai",
            PICOCLAW_LLM_BASE_URL: server.url,
            PICOCLAW_LLM_MODEL: "test-model",
            PICOCLAW_LLM_API_KEY: "bench",
          },
        });
        const client = swarmClient(ctx.nc, s.names);
        const round = { direct: {} as Record<number, Run>, swarm: {} as Record<number, Run> };
        try {
          // Warm-up: every worker's HTTP client and the server's first responses.
          await direct(server, `warm${r}`, 4);
          await client.submit("warm", {
            tasks: delays(8).map((_, i) => ({ id: `w${i}`, capability: "general", prompt: prompt(`swarm-warm${r}`, i, 50) })),
          });
          for (const n of FANOUTS) {
            progress(` ${n}`);
            round.direct[n] = await direct(server, `direct${r}n${n}`, n);
            const tag = `swarm${r}n${n}`;
            const plan = { tasks: delays(n).map((d, i) => ({ id: `c${i}`, capability: "general", prompt: prompt(tag, i, d) })) };
            const x = await client.submit(`fan-out of ${n}`, plan);
            round.swarm[n] = measure(server, tag, x.submittedAt, x.answeredAt - x.submittedAt);
          }
        } finally {
          client.close();
          await s.stop();
        }
        progress("\n");
        rounds.push(round);
      }
    } finally {
      await server.stop();
    }
    const col = (f: (x: (typeof rounds)[number]) => number) => stat(rounds.map(f));
    const over = (x: Run) => (100 * (x.makespan - x.work)) / x.work;
    const rows: Row[] = [];
    for (const n of FANOUTS) {
      rows.push({
        group: "baseline",
        name: `${n} LLM calls made directly, all at once`,
        figure: `makespan ${fmt(
          col((x) => x.direct[n]!.makespan),
          "ms",
          0,
        )}`,
        ratio: `overhead ${fmt(
          col((x) => over(x.direct[n]!)),
          "%",
          1,
        )}`,
      });
      const overhead = col((x) => over(x.swarm[n]!));
      rows.push({
        group: "4 fan-out",
        name: `${n} sub-tasks (200 ms–1 s LLM calls), 4 workers`,
        figure: `makespan ${fmt(
          col((x) => x.swarm[n]!.makespan),
          "ms",
          0,
        )}`,
        ratio: `overhead ${fmt(overhead, "%", 1)}; ${fmt(
          col((x) => x.swarm[n]!.makespan / x.direct[n]!.makespan),
          "×",
          2,
        )} of direct`,
        target: "overhead < 1% (issue)",
        verdict: overhead.median < 1 ? "met" : "MISSED",
      });
    }
    const work = stat(rounds.flatMap((x) => FANOUTS.map((n) => x.swarm[n]!.work)));
    const notes = [
      `Fan-out: critical-path work = the longest LLM call as the test server timed it (nominal ${MAX_DELAY} ms; measured ${fmt(work, "ms", 0)}); overhead = (makespan − work) ÷ work.`,
      "The longest call is the plan's last sub-task, so it starts only once every sub-task before it has been dispatched. LLM calls reached the server (ms after submit):",
      ...FANOUTS.map(
        (n) =>
          `  ${String(n).padStart(3)} sub-tasks: first ${fmt(
            col((x) => x.swarm[n]!.firstCall),
            "ms",
            0,
          )}, last ${fmt(
            col((x) => x.swarm[n]!.lastCall),
            "ms",
            0,
          )}; ` +
          `answer ${fmt(
            col((x) => x.swarm[n]!.makespan - x.swarm[n]!.lastEnd),
            "ms",
            0,
          )} after the last call ended (results collected, synthesis, answer)` +
          `; at most ${Math.min(...rounds.map((x) => x.swarm[n]!.overlap))}–${Math.max(...rounds.map((x) => x.swarm[n]!.overlap))} calls at once` +
          `  | direct: first ${fmt(
            col((x) => x.direct[n]!.firstCall),
            "ms",
            0,
          )}, last ${fmt(
            col((x) => x.direct[n]!.lastCall),
            "ms",
            0,
          )}`,
      ),
    ];
    return { id: "fanout", rows, rounds, notes };
  },
};
