// Scenario 3: no-op throughput with 1, 2 and 4 workers, against a raw JetStream work queue and BullMQ
// with the same number of worker processes and the same in-flight limit per worker (32).
import { bullThroughput } from "../lib/bull.ts";
import { jetstreamThroughput } from "../lib/nats-baselines.ts";
import { noopPlan, startBenchSwarm, swarmClient } from "../lib/swarm.ts";
import { type BenchContext, type Row, redisOf, type Scenario, type ScenarioResult } from "../lib/types.ts";
import { cpuMeter, envInt, envList, fmt, perItem, progress, stat } from "../lib/util.ts";

const WORKERS = envList("WORKERS", [1, 2, 4]);
const SLOTS = 32;
const JS_N = envInt("JS_N", 20_000);
const BULL_N = envInt("BULL_N", 5_000);
const REQ_N = envInt("THROUGHPUT_N", 1_000);
const SUB_N = envInt("SUBTASKS_N", 1_024);
const PER_REQUEST = 16;

type Cpu = Record<string, number>;
interface Round {
  js: Record<number, number>;
  bull: Record<number, number>;
  requests: Record<number, number>;
  subtasks: Record<number, number>;
  /** CPU ms per item by process group, per worker count. */
  cpu: { js: Record<number, Cpu>; bull: Record<number, Cpu>; requests: Record<number, Cpu>; subtasks: Record<number, Cpu> };
}

async function swarmRound(ctx: BenchContext, r: number) {
  const s = await startBenchSwarm({
    natsUrl: ctx.nats.url,
    hid: ctx.hid(`tput${r}`),
    workers: WORKERS[0]!,
    workerSlots: SLOTS,
    coordinatorSlots: 128,
    coordinatorArgs: ["--swarm.tasks.max_fanout", "64"],
  });
  const client = swarmClient(ctx.nc, s.names);
  const requests: Record<number, number> = {};
  const subtasks: Record<number, number> = {};
  const cpu = { requests: {} as Record<number, Cpu>, subtasks: {} as Record<number, Cpu> };
  const meter = () =>
    cpuMeter({
      coordinator: [s.coordinator.pid],
      workers: s.workers.map((w) => w.pid),
      "nats-server": [ctx.nats.proc.pid],
      bench: [process.pid],
    });
  try {
    for (const w of WORKERS) {
      if (s.workers.length < w) await s.addWorkers(w - s.workers.length);
      progress(` ${w}w`);
      await Promise.all(Array.from({ length: 20 }, () => client.submit("noop")));
      let m = await meter();
      let t0 = performance.now();
      await Promise.all(Array.from({ length: REQ_N }, () => client.submit("noop")));
      requests[w] = REQ_N / ((performance.now() - t0) / 1000);
      cpu.requests[w] = perItem(await m(), REQ_N);
      const plans = Math.max(1, Math.round(SUB_N / PER_REQUEST));
      await client.submit("noop", noopPlan(PER_REQUEST));
      m = await meter();
      t0 = performance.now();
      await Promise.all(Array.from({ length: plans }, () => client.submit("noop", noopPlan(PER_REQUEST))));
      subtasks[w] = (plans * PER_REQUEST) / ((performance.now() - t0) / 1000);
      cpu.subtasks[w] = perItem(await m(), plans * PER_REQUEST);
    }
  } finally {
    client.close();
    await s.stop();
  }
  return { requests, subtasks, cpu };
}

export const throughput: Scenario = {
  id: "throughput",
  title: "3: no-op throughput with 1/2/4 workers",
  needs: ["redis"],
  async run(ctx): Promise<ScenarioResult> {
    const rounds: Round[] = [];
    for (let r = 0; r < ctx.rounds; r++) {
      progress(`  throughput round ${r + 1}/${ctx.rounds}: JetStream`);
      const js: Record<number, number> = {};
      const jsCpu: Record<number, Cpu> = {};
      for (const w of WORKERS) {
        progress(` ${w}w`);
        const x = await jetstreamThroughput(ctx.nc, ctx.nats.url, ctx.nats.proc.pid, `r${r}w${w}`, w, SLOTS, JS_N);
        js[w] = x.rate;
        jsCpu[w] = x.cpuPerItem;
      }
      const bull: Record<number, number> = {};
      const bullCpu: Record<number, Cpu> = {};
      progress(", BullMQ");
      for (const w of WORKERS) {
        progress(` ${w}w`);
        const x = await bullThroughput(redisOf(ctx), `bench-tput-${r}-${w}`, w, SLOTS, BULL_N);
        bull[w] = x.rate;
        bullCpu[w] = x.cpuPerItem;
      }
      progress(", swarm");
      const sw = await swarmRound(ctx, r);
      progress("\n");
      rounds.push({ js, bull, requests: sw.requests, subtasks: sw.subtasks, cpu: { js: jsCpu, bull: bullCpu, ...sw.cpu } });
    }
    const col = (f: (x: Round) => number) => stat(rounds.map(f));
    const rate = (f: (x: Round) => number) => fmt(col(f), "/s", 0);
    const times = (f: (x: Round) => number) => fmt(col(f), "×", 2);
    const rows: Row[] = [];
    for (const w of WORKERS) {
      rows.push({ group: "baseline", name: `JetStream work queue → ack, ${w} worker(s)`, figure: rate((x) => x.js[w]!), ratio: "1.00×" });
      rows.push({
        group: "baseline",
        name: `BullMQ add → completed, ${w} worker(s)`,
        figure: rate((x) => x.bull[w]!),
        ratio: `${times((x) => x.bull[w]! / x.js[w]!)} of JetStream`,
      });
    }
    for (const w of WORKERS) {
      const bull = `, ${times((x) => x.subtasks[w]! / x.bull[w]!)} of BullMQ`;
      rows.push({
        group: "3 throughput",
        name: `no-op sub-tasks (${PER_REQUEST} per request), ${w} worker(s)`,
        figure: rate((x) => x.subtasks[w]!),
        ratio: `${times((x) => x.subtasks[w]! / x.js[w]!)} of JetStream${bull}`,
      });
    }
    for (const w of WORKERS) {
      const vsBull = col((x) => x.requests[w]! / x.bull[w]!);
      rows.push({
        group: "3 throughput",
        name: `no-op requests (1 sub-task each), ${w} worker(s)`,
        figure: rate((x) => x.requests[w]!),
        ratio: `${times((x) => x.requests[w]! / x.js[w]!)} of JetStream, ${fmt(vsBull, "×", 2)} of BullMQ`,
        target: w === 4 ? "≥ 2× BullMQ, 4 workers (issue; §12: ≥ 1×)" : undefined,
        verdict: w === 4 ? (vsBull.median >= 2 ? "met" : "MISSED") : undefined,
      });
    }
    // Where the CPU goes: on a 2-core box throughput is bounded by 2000 ms of CPU per second / CPU per item.
    const cpuLine = (label: string, pick: (x: Round) => Cpu | undefined) => {
      const keys = Object.keys(pick(rounds[0]!) ?? {});
      if (!keys.length) return `  ${label}: n/a`;
      return `  ${label}: ${keys.map((k) => `${k} ${stat(rounds.map((x) => pick(x)?.[k] ?? NaN)).median.toFixed(3)}`).join(", ")}`;
    };
    const notes = [
      "CPU ms per item (median over rounds; /proc/<pid>/stat, 10 ms ticks), by process:",
      ...WORKERS.flatMap((w) => [
        cpuLine(`JetStream message, ${w}w`, (x) => x.cpu.js[w]),
        cpuLine(`BullMQ job, ${w}w`, (x) => x.cpu.bull[w]),
        cpuLine(`swarm sub-task (16/request), ${w}w`, (x) => x.cpu.subtasks[w]),
        cpuLine(`swarm request (1 sub-task), ${w}w`, (x) => x.cpu.requests[w]),
      ]),
    ];
    return { id: "throughput", rows, rounds: rounds as unknown as Record<string, unknown>[], notes };
  },
};
