// Scenario 6: 10 / 50 / 100 simulated nodes (bench/helpers/sim-nodes.ts: one NATS connection per node,
// full NodeInfo heartbeats at the configured interval). The bench is the observer, as a dashboard is:
// it decodes each heartbeat into a membership registry (lib/registry.ts) exactly as lib/membership.ts
// does, then builds and renders dashboard frames (roles/dashboard/snapshot.ts + render.ts) from it.
// Per-node costs should stay flat as the swarm grows; N = 10 is the baseline.

import { decode, nodeInfoSchema } from "../../lib/messages.ts";
import { createRegistry, observe, type Registry } from "../../lib/registry.ts";
import { nodeIdFromHeartbeat, swarmNames } from "../../lib/subjects.ts";
import { renderDashboard } from "../../roles/dashboard/render.ts";
import {
  type DashboardSnapshot,
  type SnapshotNode,
  snapshotNodeOf,
  swarmStats,
  taskCounts,
  tokenCounts,
} from "../../roles/dashboard/snapshot.ts";
import type { BenchContext, Row, Scenario, ScenarioResult } from "../lib/types.ts";
import { envInt, envList, fmt, pct, progress, startHelper, stat, until } from "../lib/util.ts";

const COUNTS = envList("NODES", [10, 50, 100]);
const INTERVAL = envInt("HB_INTERVAL_MS", 1_000);
const WINDOW = envInt("HB_WINDOW_MS", 3_000);
const FRAMES = envInt("FRAMES", 200);

/** The snapshot a dashboard builds from its registry (as roles/dashboard/snapshot.ts buildSnapshot does for an observer). */
function snapshotOf(reg: Registry, hid: string): DashboardSnapshot {
  const now = Date.now();
  const nodes: SnapshotNode[] = [...reg.values()]
    .map((p) => snapshotNodeOf(p.info, p.status, now - p.lastSeen, Math.max(0, now - p.info.started_at)))
    .sort((a, b) => a.node.localeCompare(b.node));
  const self: SnapshotNode & { sid: string } = {
    node: "bench-dashboard",
    role: "dashboard",
    status: "online",
    capabilities: [],
    running: 0,
    max_concurrent: 0,
    uptime_ms: 1_000,
    last_seen_ms_ago: 0,
    version: "bench",
    tasks: [],
    done: 0,
    failed: 0,
    sid: "s-bench",
    bad_messages: { total: 0, by_subject: {}, refused: {} },
    tokens: tokenCounts([]),
  };
  return {
    v: 1,
    generated_at: new Date(now).toISOString(),
    hid,
    this_node: self,
    connections: {
      nats: { connected: true, state: "connected", url: "nats://127.0.0.1", disconnects: 0 },
      temporal: { enabled: false, connected: false, address: "" },
    },
    stats: swarmStats(nodes),
    tasks: taskCounts(nodes, 0),
    tokens: tokenCounts(nodes.map((n) => n.tokens)),
    queues: [],
    nodes,
    bad_messages: { total: 0, by_subject: {}, refused: {} },
  };
}

interface Point {
  nodes: number;
  rate: number;
  expected: number;
  bytesPerBeat: number;
  /** Median time to decode + observe one heartbeat as it arrived (one every interval/nodes ms). */
  handleUs: number;
  /** The same heartbeats replayed back to back: the CPU cost per heartbeat with a warm JIT. */
  replayUs: number;
  captured?: { subject: string; data: Uint8Array }[];
  frameMs: number;
  frameP99Ms: number;
  frameLines: number;
}

/**
 * The heartbeats captured at each size, replayed through the same decode + observe into fresh
 * registries, back to back, interleaving the sizes (so JIT warm-up and GC favour none): median µs per
 * heartbeat for each size.
 */
function replayAll(points: Point[], hid: (n: number) => string): Map<number, number> {
  const sets = points.map((p) => ({ n: p.nodes, names: swarmNames(hid(p.nodes)), msgs: p.captured ?? [], samples: [] as number[] }));
  const batch = (set: (typeof sets)[number]) => {
    const reg = createRegistry();
    const reps = Math.max(1, Math.ceil(2_000 / Math.max(1, set.msgs.length)));
    const t = performance.now();
    for (let k = 0; k < reps; k++) {
      for (const c of set.msgs) {
        const d = decode(nodeInfoSchema, c.data);
        if (d.ok && nodeIdFromHeartbeat(set.names, c.subject) === d.value.node) observe(reg, d.value, Date.now());
      }
    }
    return (1000 * (performance.now() - t)) / (reps * Math.max(1, set.msgs.length));
  };
  for (let i = 0; i < 3; i++) for (const set of sets) batch(set); // warm-up
  for (let i = 0; i < 9; i++) for (const set of sets) set.samples.push(batch(set));
  return new Map(sets.map((set) => [set.n, pct(set.samples, 50)]));
}

async function one(ctx: BenchContext, hid: string, n: number): Promise<Point> {
  const names = swarmNames(hid);
  const reg = createRegistry();
  let counting = false;
  let beats = 0;
  let bytes = 0;
  const handle: number[] = [];
  const captured: { subject: string; data: Uint8Array }[] = [];
  const sub = ctx.nc.subscribe(names.heartbeatAll, {
    callback: (_e, m) => {
      const t = performance.now();
      const d = decode(nodeInfoSchema, m.data);
      if (d.ok && nodeIdFromHeartbeat(names, m.subject) === d.value.node) observe(reg, d.value, Date.now());
      if (!counting) return;
      handle.push(performance.now() - t);
      captured.push({ subject: m.subject, data: m.data });
      beats++;
      bytes += m.data.length;
    },
  });
  await ctx.nc.flush();
  const sim = await startHelper("sim-nodes", [ctx.nats.url, hid, String(n), String(INTERVAL)]);
  try {
    await until(`${n} simulated nodes seen`, () => reg.size >= n, 30_000, 20);
    await Bun.sleep(INTERVAL / 2);
    counting = true;
    const t0 = performance.now();
    await Bun.sleep(WINDOW);
    counting = false;
    const rate = beats / ((performance.now() - t0) / 1000);
    // Dashboard frames from the live registry: build the snapshot and render it, as each refresh does.
    const frames: number[] = [];
    let lines = 0;
    for (let i = 0; i < FRAMES + 20; i++) {
      const t = performance.now();
      const text = renderDashboard(snapshotOf(reg, hid));
      const dt = performance.now() - t;
      if (i >= 20) frames.push(dt); // first frames warm the JIT
      lines = text.split("\n").length;
    }
    return {
      nodes: n,
      rate,
      expected: (n * 1000) / INTERVAL,
      bytesPerBeat: bytes / Math.max(1, beats),
      handleUs: 1000 * pct(handle, 50),
      replayUs: NaN,
      captured,
      frameMs: pct(frames, 50),
      frameP99Ms: pct(frames, 99),
      frameLines: lines,
    };
  } finally {
    sub.unsubscribe();
    await sim.stop();
  }
}

export const nodes: Scenario = {
  id: "nodes",
  title: "6: 10/50/100 simulated nodes",
  async run(ctx): Promise<ScenarioResult> {
    const rounds: Record<number, Point>[] = [];
    for (let r = 0; r < ctx.rounds; r++) {
      progress(`  nodes round ${r + 1}/${ctx.rounds}:`);
      const round: Record<number, Point> = {};
      const hids = new Map(COUNTS.map((n) => [n, ctx.hid(`nodes${r}n${n}`)]));
      for (const n of COUNTS) {
        progress(` ${n}`);
        round[n] = await one(ctx, hids.get(n)!, n);
      }
      const replayed = replayAll(Object.values(round), (n) => hids.get(n)!);
      for (const p of Object.values(round)) {
        p.replayUs = replayed.get(p.nodes)!;
        delete p.captured; // not for the JSON file
      }
      progress("\n");
      rounds.push(round);
    }
    const base = COUNTS[0]!;
    const col = (f: (x: Record<number, Point>) => number) => stat(rounds.map(f));
    const rows: Row[] = [];
    for (const n of COUNTS) {
      const isBase = n === base;
      const grp = isBase ? "baseline" : "6 nodes";
      const flatFrame = col((x) => x[n]!.frameMs / n / (x[base]!.frameMs / base));
      const flatBeat = col((x) => x[n]!.replayUs / x[base]!.replayUs);
      const rateOk = col((x) => x[n]!.rate / x[n]!.expected);
      rows.push({
        group: grp,
        name: `${n} nodes: heartbeats observed (expected ${(n * 1000) / INTERVAL}/s)`,
        figure: `${fmt(
          col((x) => x[n]!.rate),
          "/s",
          1,
        )}, ${fmt(
          col((x) => x[n]!.bytesPerBeat),
          " B",
          0,
        )} each`,
        ratio: `${fmt(rateOk, "×", 2)} of nodes/interval`,
        target: "= nodes/interval",
        verdict: Math.abs(rateOk.median - 1) <= 0.05 ? "met" : "MISSED",
      });
      rows.push({
        group: grp,
        name: `${n} nodes: decode + registry update per heartbeat`,
        figure: `${fmt(
          col((x) => x[n]!.replayUs),
          "µs",
          1,
        )} warm (${fmt(
          col((x) => x[n]!.handleUs),
          "µs",
          0,
        )} as they arrive)`,
        ratio: isBase ? "1.00×" : `${fmt(flatBeat, "×", 2)} of ${base} nodes`,
        target: isBase ? undefined : "flat (§12)",
        verdict: isBase ? undefined : flatBeat.median <= 1.5 ? "met" : "MISSED",
      });
      rows.push({
        group: grp,
        name: `${n} nodes: dashboard frame build + render`,
        figure: `${fmt(
          col((x) => x[n]!.frameMs),
          "ms",
          3,
        )} = ${fmt(
          col((x) => (1000 * x[n]!.frameMs) / n),
          "µs",
          1,
        )}/node`,
        ratio: isBase ? "1.00×" : `${fmt(flatFrame, "×", 2)} per node of ${base} nodes`,
        target: isBase ? undefined : "flat per node (§12)",
        verdict: isBase ? undefined : flatFrame.median <= 1.5 ? "met" : "MISSED",
      });
    }
    const notes = [
      `Nodes: heartbeats every ${INTERVAL} ms from one process with one NATS connection per simulated node, counted over ${WINDOW} ms; ` +
        `heartbeat cost: median as they arrived (an idle process, cold caches) and the same heartbeats replayed back to back (warm; the flatness ratio uses this one); ` +
        `frames: median of ${FRAMES} builds+renders from the live registry. "Flat" is judged as ≤ 1.5× the ${base}-node per-node cost.`,
    ];
    return { id: "nodes", rows, rounds, notes };
  },
};
