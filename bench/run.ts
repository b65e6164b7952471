// `bun run bench`: the swarm's own cost, as ratios against baselines measured in the same run.
// Starts its own nats-server (and a Redis for the BullMQ rows of the scenarios that have them), runs
// every scenario BENCH_ROUNDS (default 3) times alternating baseline and swarm, prints one table of
// median [min–max] and writes every raw figure to bench/results/bench-<time>.json.
// BENCH_SCENARIOS=latency,throughput,fanout,footprint,nodes,temporal,agent picks scenarios; see bench/README.md.

import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { connect } from "nats";
import { loadConfig } from "../lib/config.ts";
import { startNatsServer } from "../test/helpers/nats-server.ts";
import { startRedis } from "./lib/redis.ts";
import { tempHome } from "./lib/swarm.ts";
import type { BenchContext, Row, Scenario, ScenarioResult } from "./lib/types.ts";
import { BENCH_DIR, envInt, progress } from "./lib/util.ts";
import { agent } from "./scenarios/agent.ts";
import { fanout } from "./scenarios/fanout.ts";
import { footprint } from "./scenarios/footprint.ts";
import { latency } from "./scenarios/latency.ts";
import { nodes } from "./scenarios/nodes.ts";
import { temporal } from "./scenarios/temporal.ts";
import { throughput } from "./scenarios/throughput.ts";

const ALL: Scenario[] = [latency, throughput, fanout, footprint, nodes, temporal, agent];
const ROUNDS = envInt("ROUNDS", 3);

function pick(): Scenario[] {
  const want = process.env.BENCH_SCENARIOS?.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (!want?.length) return ALL;
  const unknown = want.filter((w) => !ALL.some((s) => s.id === w));
  if (unknown.length) throw new Error(`unknown BENCH_SCENARIOS ${unknown.join(",")}; known: ${ALL.map((s) => s.id).join(",")}`);
  return ALL.filter((s) => want.includes(s.id));
}

function table(rows: Row[]): string {
  const head: Row = {
    group: "#",
    name: "scenario",
    figure: "figure: median [min–max] over rounds",
    ratio: "ratio",
    target: "target",
    verdict: "",
  };
  const all = [head, ...rows];
  const w = (f: (r: Row) => string) => Math.max(...all.map((r) => f(r).length));
  const wg = w((r) => r.group),
    wn = w((r) => r.name),
    wf = w((r) => r.figure),
    wr = w((r) => r.ratio),
    wt = w((r) => r.target ?? "");
  const line = (r: Row) =>
    `${r.group.padEnd(wg)}  ${r.name.padEnd(wn)}  ${r.figure.padEnd(wf)}  ${r.ratio.padEnd(wr)}  ${(r.target ?? "").padEnd(wt)}  ${r.verdict ?? ""}`.trimEnd();
  const sep = "-".repeat(wg + wn + wf + wr + wt + 14);
  return [line(head), sep, ...rows.map(line)].join("\n");
}

async function main() {
  const scenarios = pick();
  const started = performance.now();
  const at = new Date();
  progress(`PicoClaw Swarm benchmark: ${scenarios.map((s) => s.id).join(", ")}; ${ROUNDS} rounds each\n`);
  // Every scenario round makes its own swarm (H-id), whose streams reserve their max_bytes: the helper's
  // server reserves 1T of file store, as the default (75 % of the free disk) runs out after a few dozen.
  const nats = await startNatsServer();
  // A baseline that cannot run is an error: a ratio without it would not say what it claims.
  const redis = scenarios.some((s) => s.needs?.includes("redis"))
    ? await startRedis().catch(async (err: Error) => {
        await nats.stop();
        console.error(`bench: ${err.message}`);
        process.exit(1);
      })
    : undefined;
  const nc = await connect({ servers: nats.url, name: "bench" });
  const natsVersion = nc.info?.version ?? "?";
  let seq = 0;
  const ctx: BenchContext = {
    nats,
    nc,
    redis,
    rounds: ROUNDS,
    cfg: loadConfig({ flags: {}, env: {}, home: tempHome() }).config,
    hid: (tag) => `bench-${tag}-${++seq}`,
  };
  const results: ScenarioResult[] = [];
  const failures: string[] = [];
  try {
    for (const s of scenarios) {
      const t0 = performance.now();
      progress(`${s.title}\n`);
      try {
        results.push(await s.run(ctx));
      } catch (err) {
        // One broken scenario must not cost the others' figures: report it and go on.
        const msg = (err as Error).stack ?? String(err);
        failures.push(`${s.id}: ${msg}`);
        progress(`  scenario ${s.id} FAILED: ${msg}\n`);
        results.push({
          id: s.id,
          rows: [{ group: s.id, name: s.title, figure: `FAILED: ${(err as Error).message.split("\n")[0]}`, ratio: "", verdict: "MISSED" }],
          rounds: [],
        });
      }
      progress(`  (${((performance.now() - t0) / 1000).toFixed(0)}s)\n`);
    }
  } finally {
    await nc.close();
    await redis?.stop();
    await nats.stop();
  }

  const seconds = (performance.now() - started) / 1000;
  const env = `nats-server ${natsVersion}, ${redis ? `redis ${redis.version}` : "no redis (no scenario picked needs it)"}, bun ${Bun.version}, ${cpus().length} cores (${cpus()[0]?.model.trim() ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB`;
  console.log(`\nPicoClaw Swarm benchmark — ${at.toISOString()} — ${ROUNDS} rounds, median [min–max] — ${seconds.toFixed(0)}s`);
  console.log(env);
  console.log("");
  console.log(table(results.flatMap((r) => r.rows)));
  for (const r of results) {
    if (!r.notes?.length) continue;
    console.log("");
    console.log(r.notes.join("\n"));
  }
  mkdirSync(join(BENCH_DIR, "results"), { recursive: true });
  const file = join(BENCH_DIR, "results", `bench-${at.toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        at: at.toISOString(),
        seconds,
        environment: env,
        rounds: ROUNDS,
        knobs: Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("BENCH_"))),
        scenarios: results,
        failures,
      },
      null,
      2,
    ),
  );
  console.log(`\nraw figures: ${file}`);
  if (failures.length) {
    console.error(`\n${failures.length} scenario(s) failed:\n${failures.join("\n\n")}`);
    process.exit(1);
  }
}

await main();
process.exit(0);
