// `bun run bench`: the swarm's own cost, as ratios against raw NATS measured in the same run.
// Each scenario runs 3 rounds, alternating baseline and swarm; the table shows median [min–max].
import { connect, type NatsConnection } from "nats";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decode, encode } from "../lib/messages.ts";
import { ensureStreams } from "../lib/streams.ts";
import { swarmNames, type SwarmNames } from "../lib/subjects.ts";
import { loadConfig } from "../lib/config.ts";
import { newRequestId } from "../lib/submit.ts";
import { requestEventSchema, MAX_PIPELINE_MESSAGE_BYTES, type RequestMsg } from "../lib/task-messages.ts";
import { startNatsServer, type NatsServer } from "../test/helpers/nats-server.ts";
import { type RoleProcess, ROOT, spawnRole, tempHome } from "../test/helpers/role-process.ts";

const ROUNDS = 3;
const LATENCY_N = Number(process.env.BENCH_LATENCY_N ?? 200);
const THROUGHPUT_N = Number(process.env.BENCH_THROUGHPUT_N ?? 400);
const WORKER_COUNTS = [1, 2, 4];

interface Stat { median: number; min: number; max: number }
const stat = (xs: number[]): Stat => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s.at(-1)! };
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function spawnResponder(url: string, subject: string) {
  const p = Bun.spawn(["bun", join(ROOT, "bench/responder.ts"), url, subject], { stdout: "pipe", stderr: "inherit" });
  const reader = p.stdout.getReader();
  await reader.read(); // "ready"
  return p;
}

/** Raw NATS request/reply to a responder process: latency (sequential) and throughput (64 in flight). */
async function baseline(nc: NatsConnection, url: string) {
  const p = await spawnResponder(url, "bench.echo");
  const body = encode({ v: 1, noop: true });
  for (let i = 0; i < 50; i++) await nc.request("bench.echo", body, { timeout: 5_000 });
  const lat: number[] = [];
  for (let i = 0; i < LATENCY_N; i++) {
    const t = performance.now();
    await nc.request("bench.echo", body, { timeout: 5_000 });
    lat.push(performance.now() - t);
  }
  const n = THROUGHPUT_N * 10;
  const t0 = performance.now();
  let sent = 0;
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (sent < n) {
      sent++;
      await nc.request("bench.echo", body, { timeout: 10_000 });
    }
  }));
  const rate = n / ((performance.now() - t0) / 1000);
  p.kill("SIGTERM");
  await p.exited;
  return { p50: pct(lat, 50), p99: pct(lat, 99), rate };
}

interface BenchSwarm { names: SwarmNames; nodes: RoleProcess[]; stop(): Promise<void> }

async function startBenchSwarm(nats: NatsServer, hid: string, workers: number): Promise<BenchSwarm> {
  const common = ["--swarm.nats.urls", nats.url, "--swarm.hid", hid, "--log.level", "warn", "--swarm.nats.heartbeat_interval", "1s", "--swarm.nats.node_timeout", "5s"];
  const env = { PICOCLAW_LLM_PROVIDER: "echo" };
  const home = tempHome();
  const ws = Array.from({ length: workers }, () => spawnRole("worker.ts", [...common, "--swarm.max_concurrent", "32"], { env, home }));
  const coord = spawnRole("coordinator.ts", [...common, "--swarm.max_concurrent", "128", "--log.level", "info"], { env, home });
  const nodes = [coord, ...ws];
  await coord.waitForLine(/Node joined swarm .*self=true/, 20_000);
  // Wait until the coordinator knows every worker (it logs joins at info).
  const deadline = Date.now() + 20_000;
  while (coord.countLines(/Node joined swarm .*role=worker/) < workers) {
    if (Date.now() > deadline) throw new Error(`workers did not join:\n${coord.output()}`);
    await Bun.sleep(20);
  }
  return {
    names: swarmNames(hid),
    nodes,
    async stop() {
      for (const p of nodes) p.signal("SIGTERM");
      await Promise.all(nodes.map((p) => p.exited(15_000).catch(() => p.proc.kill("SIGKILL"))));
    },
  };
}

/** Submits requests with one no-op sub-task each and resolves with each one's answer latency. */
function swarmClient(nc: NatsConnection, names: SwarmNames) {
  const waiting = new Map<string, (ok: boolean) => void>();
  nc.subscribe(names.requestEventsAll, {
    callback: (_e, m) => {
      const d = decode(requestEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (!d.ok) return;
      if (d.value.kind === "answer" || d.value.kind === "failed") waiting.get(d.value.request)?.(d.value.status === "completed");
    },
  });
  const js = nc.jetstream();
  return async (): Promise<number> => {
    const request = newRequestId();
    const t = performance.now();
    const done = new Promise<boolean>((resolve) => waiting.set(request, resolve));
    const msg: RequestMsg = { v: 1, request, text: "noop", capabilities: ["general"], submitted_at: Date.now() };
    await js.publish(names.requestSubmit, encode(msg));
    const ok = await done;
    waiting.delete(request);
    if (!ok) throw new Error(`request ${request} did not complete`);
    return performance.now() - t;
  };
}

async function swarmLatency(nc: NatsConnection, nats: NatsServer, hid: string) {
  const s = await startBenchSwarm(nats, hid, 1);
  try {
    const one = swarmClient(nc, s.names);
    for (let i = 0; i < 20; i++) await one();
    const lat: number[] = [];
    for (let i = 0; i < LATENCY_N; i++) lat.push(await one());
    return { p50: pct(lat, 50), p99: pct(lat, 99) };
  } finally {
    await s.stop();
  }
}

async function swarmThroughput(nc: NatsConnection, nats: NatsServer, hid: string, workers: number) {
  const s = await startBenchSwarm(nats, hid, workers);
  try {
    const one = swarmClient(nc, s.names);
    await Promise.all(Array.from({ length: 20 }, () => one()));
    const t0 = performance.now();
    await Promise.all(Array.from({ length: THROUGHPUT_N }, () => one()));
    return THROUGHPUT_N / ((performance.now() - t0) / 1000);
  } finally {
    await s.stop();
  }
}

const fmt = (s: Stat, unit: string, digits = 2) => `${s.median.toFixed(digits)}${unit} [${s.min.toFixed(digits)}–${s.max.toFixed(digits)}]`;

async function main() {
  const nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  const cfg = loadConfig({ flags: {}, env: {}, home: tempHome() }).config;
  const rounds: { base: Awaited<ReturnType<typeof baseline>>; lat: { p50: number; p99: number }; tput: Record<number, number> }[] = [];
  try {
    for (let r = 0; r < ROUNDS; r++) {
      process.stderr.write(`round ${r + 1}/${ROUNDS}: baseline`);
      const base = await baseline(nc, nats.url);
      process.stderr.write(", swarm latency");
      const hid = `bench${r}`;
      await ensureStreams(nc, swarmNames(hid), cfg);
      const lat = await swarmLatency(nc, nats, hid);
      const tput: Record<number, number> = {};
      for (const w of WORKER_COUNTS) {
        process.stderr.write(`, ${w} worker(s)`);
        tput[w] = await swarmThroughput(nc, nats, `bench${r}w${w}`, w);
      }
      process.stderr.write("\n");
      rounds.push({ base, lat, tput });
    }
  } finally {
    await nc.close();
    await nats.stop();
  }
  const col = <T>(f: (x: (typeof rounds)[number]) => number) => stat(rounds.map(f));
  const base50 = col((x) => x.base.p50);
  const base99 = col((x) => x.base.p99);
  const baseRate = col((x) => x.base.rate);
  const lat50 = col((x) => x.lat.p50);
  const lat99 = col((x) => x.lat.p99);
  const ratio50 = col((x) => x.lat.p50 / x.base.p50);
  const rows: string[][] = [
    ["raw NATS request/reply, 1 hop (baseline)", `p50 ${fmt(base50, "ms", 3)}  p99 ${fmt(base99, "ms", 3)}`, "1.00"],
    ["submit → answer, 1 no-op sub-task (1 worker)", `p50 ${fmt(lat50, "ms")}  p99 ${fmt(lat99, "ms")}`, `${fmt(ratio50, "×", 1)} (p50 ÷ baseline p50)`],
    ["raw NATS request/reply throughput, 64 in flight (baseline)", `${fmt(baseRate, "/s", 0)}`, "1.00"],
  ];
  for (const w of WORKER_COUNTS) {
    const rate = col((x) => x.tput[w]!);
    const ratio = col((x) => x.tput[w]! / x.base.rate);
    rows.push([`no-op requests (1 sub-task each) with ${w} worker(s)`, `${fmt(rate, "/s", 0)}`, `${fmt(ratio, "", 3)} of baseline`]);
  }
  const w0 = Math.max(...rows.map((r) => r[0]!.length));
  const w1 = Math.max(...rows.map((r) => r[1]!.length));
  console.log(`\nPicoClaw Swarm benchmark — ${ROUNDS} rounds, median [min–max], ${new Date().toISOString()}`);
  console.log(`${"scenario".padEnd(w0)}  ${"figure".padEnd(w1)}  ratio`);
  for (const r of rows) console.log(`${r[0]!.padEnd(w0)}  ${r[1]!.padEnd(w1)}  ${r[2]}`);
  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  const file = join(ROOT, "bench/results", `bench-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify({ rounds, latency_n: LATENCY_N, throughput_n: THROUGHPUT_N }, null, 2));
  console.log(`\nraw figures: ${file}`);
}

await main();
