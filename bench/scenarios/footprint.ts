// Scenario 5: footprint of compiled workers. `bun run build`, then per round 4 dist/picoclaw-worker
// processes started one after another (each on an otherwise idle box): start-up to its own
// `Node joined swarm ... self=true` line, then idle RSS and private memory from smaps_rollup.
// Baseline: a compiled Bun program that only connects to NATS (bench/helpers/bare-node.ts).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureStreams } from "../../lib/streams.ts";
import { swarmNames } from "../../lib/subjects.ts";
import { tempHome } from "../lib/swarm.ts";
import type { Row, Scenario, ScenarioResult } from "../lib/types.ts";
import { BENCH_DIR, build, type Child, envInt, fmt, memoryOf, progress, ROOT, spawnChild, stat } from "../lib/util.ts";

const PROCS = envInt("FOOTPRINT_PROCS", 4);
const IDLE_MS = envInt("IDLE_MS", 3_000);
// A worker as deployed: the OpenAI provider configured (its SDK loaded), no call made while idle.
const REAL_LLM = { PICOCLAW_LLM_PROVIDER: "openai", PICOCLAW_LLM_BASE_URL: "http://127.0.0.1:9/v1", PICOCLAW_LLM_MODEL: "idle-model" };
const MB = (1024 * 1024) / 1e6; // MiB -> MB (10^6 bytes), the unit of the §12 budget

interface Sample {
  startup: number;
  rss: number;
  priv: number;
  pss: number;
  anon: number;
}

async function measure(start: (i: number) => Child, ready: RegExp): Promise<Sample[]> {
  const procs: Child[] = [];
  const startups: number[] = [];
  try {
    for (let i = 0; i < PROCS; i++) {
      const c = start(i);
      procs.push(c);
      startups.push((await c.waitLine(ready, 30_000)) - c.spawnedAt);
    }
    await Bun.sleep(IDLE_MS);
    const mem = await Promise.all(procs.map((c) => memoryOf(c.pid)));
    return mem.map((m, i) => ({ startup: startups[i]!, rss: m.rss * MB, priv: m.priv * MB, pss: m.pss * MB, anon: m.anon * MB }));
  } finally {
    await Promise.all(procs.map((c) => c.stop()));
  }
}

function compileBare(dir: string): string {
  const out = join(dir, "bare-node");
  const p = Bun.spawnSync(
    ["bun", "build", "--compile", "--minify", "--bytecode", "--format=esm", join(BENCH_DIR, "helpers/bare-node.ts"), "--outfile", out],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
  );
  if (p.exitCode !== 0) throw new Error(`compiling bench/helpers/bare-node.ts failed:\n${p.stderr.toString()}`);
  return out;
}

export const footprint: Scenario = {
  id: "footprint",
  title: "5: compiled worker footprint",
  async run(ctx): Promise<ScenarioResult> {
    progress("  building dist/ (bun run build) and the bare baseline\n");
    build();
    const dir = mkdtempSync(join(tmpdir(), "picoclaw-bench-bare-"));
    const bare = compileBare(dir);
    const worker = join(ROOT, "dist/picoclaw-worker");
    const rounds: { bare: Sample[]; worker: Sample[] }[] = [];
    try {
      for (let r = 0; r < ctx.rounds; r++) {
        progress(`  footprint round ${r + 1}/${ctx.rounds}: bare, workers\n`);
        const b = await measure(() => spawnChild([bare, ctx.nats.url]), /^ready\b/);
        // The swarm exists already (as when a worker joins a running swarm): its streams are there.
        const hid = ctx.hid(`fp${r}`);
        await ensureStreams(ctx.nc, swarmNames(hid), ctx.cfg);
        const home = tempHome();
        const w = await measure(
          () =>
            spawnChild(
              [
                worker,
                "--swarm.nats.urls",
                ctx.nats.url,
                "--swarm.hid",
                hid,
                "--log.level",
                "info",
                "--swarm.nats.heartbeat_interval",
                "1s",
                "--swarm.nats.node_timeout",
                "5s",
              ],
              { env: { HOME: home, ...REAL_LLM } },
            ),
          /Node joined swarm .*self=true/,
        );
        rounds.push({ bare: b, worker: w });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // Medians over every process of every round; min–max likewise.
    const all = (k: "bare" | "worker", f: keyof Sample) => stat(rounds.flatMap((x) => x[k].map((s) => s[f])));
    const perRound = (f: (x: (typeof rounds)[number]) => number) => stat(rounds.map(f));
    const med = (xs: Sample[], f: keyof Sample) => stat(xs.map((s) => s[f])).median;
    const rss = all("worker", "rss");
    const up = all("worker", "startup");
    const priv = all("worker", "priv");
    const rows: Row[] = [
      {
        group: "baseline",
        name: "compiled bare Bun + NATS connection, idle",
        figure: `RSS ${fmt(all("bare", "rss"), " MB", 1)}  private ${fmt(all("bare", "priv"), " MB", 1)}  anon ${fmt(all("bare", "anon"), " MB", 1)}  start ${fmt(all("bare", "startup"), "ms", 0)}`,
        ratio: "1.0×",
      },
      {
        group: "5 footprint",
        name: "idle compiled worker: RSS",
        figure: fmt(rss, " MB", 1),
        ratio: `${fmt(
          perRound((x) => med(x.worker, "rss") / med(x.bare, "rss")),
          "×",
          2,
        )} of bare`,
        target: "≤ 50 MiB = 52.4 MB (issue; §12 < 60 MB)",
        verdict: rss.median <= 50 * MB ? "met" : "MISSED",
      },
      {
        group: "5 footprint",
        name: "idle compiled worker: private (clean+dirty)",
        figure: fmt(priv, " MB", 1),
        ratio: `${fmt(
          perRound((x) => med(x.worker, "priv") / med(x.bare, "priv")),
          "×",
          2,
        )} of bare`,
        target: "≤ 11 MiB = 11.5 MB (issue)",
        verdict: priv.median <= 11 * MB ? "met" : "MISSED",
      },
      {
        group: "5 footprint",
        name: "idle compiled worker: anonymous (heap, not the binary)",
        figure: fmt(all("worker", "anon"), " MB", 1),
        ratio: `${fmt(
          perRound((x) => med(x.worker, "anon") / med(x.bare, "anon")),
          "×",
          2,
        )} of bare`,
      },
      {
        group: "5 footprint",
        name: "compiled worker: start → `Node joined swarm`",
        figure: fmt(up, "ms", 0),
        ratio: `${fmt(
          perRound((x) => med(x.worker, "startup") / med(x.bare, "startup")),
          "×",
          2,
        )} of bare`,
        target: "≤ 100 ms (issue; §12 < 300 ms)",
        verdict: up.median <= 100 ? "met" : "MISSED",
      },
    ];
    return {
      id: "footprint",
      rows,
      rounds,
      notes: [
        `Footprint: ${PROCS} processes per round started one after another (each start-up on an otherwise idle box), memory read after ${IDLE_MS} ms idle with all ${PROCS} running; medians over all ${PROCS * ctx.rounds} processes. MB = 10^6 bytes.`,
        `  Rss counts the executable's file-backed pages, shared by every process of the same binary (worker Rss − anonymous ≈ ${(all("worker", "rss").median - all("worker", "anon").median).toFixed(1)} MB; bare ${(all("bare", "rss").median - all("bare", "anon").median).toFixed(1)} MB); private is what one more worker really adds while others run. Pss ${fmt(all("worker", "pss"), " MB", 1)}.`,
      ],
    };
  },
};
