// The live dashboard without a terminal (a container's log, a pipe): a frame when something a person
// would notice changed, at most every log.dashboard_interval (5 s), never because a clock ticked.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "nats";
import { swarmNames } from "../lib/subjects.ts";
import { type DashboardSnapshot, type SnapshotNode, swarmStats, taskCounts, tokenCounts } from "../roles/dashboard/snapshot.ts";
import { logFrameGate, noticeable } from "../roles/dashboard.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

/** log.dashboard_interval's default. */
const LOG_FRAME_INTERVAL_MS = 5_000;

function node(id: string, over: Partial<SnapshotNode> = {}): SnapshotNode {
  return {
    node: id,
    role: "worker",
    status: "online",
    capabilities: ["code"],
    running: 0,
    max_concurrent: 5,
    uptime_ms: 1_000,
    last_seen_ms_ago: 100,
    version: "0.1.0",
    tasks: [],
    done: 0,
    failed: 0,
    bad_messages: { total: 0, by_subject: {}, refused: {} },
    tokens: tokenCounts([]),
    ...over,
  };
}

function snapshot(nodes: SnapshotNode[], over: Partial<DashboardSnapshot> = {}): DashboardSnapshot {
  return {
    v: 1,
    generated_at: "2026-01-02T13:04:05.678Z",
    hid: "h-test",
    this_node: { ...node("claw-dash", { role: "dashboard", max_concurrent: 0 }), sid: "s-1" },
    connections: {
      nats: { connected: true, state: "connected", url: "nats://nats:4222", disconnects: 0 },
      temporal: { enabled: false, connected: false, address: "" },
    },
    stats: swarmStats(nodes),
    tasks: taskCounts(nodes, 0),
    tokens: tokenCounts(nodes.map((n) => n.tokens)),
    queues: [],
    nodes,
    bad_messages: { total: 0, by_subject: {}, refused: {} },
    ...over,
  };
}

describe("which snapshots are worth a frame in a log", () => {
  const two = [node("claw-a", { role: "coordinator" }), node("claw-b")];

  test("clocks, uptimes, elapsed times and heartbeat ages are not noticeable", () => {
    const later = two.map((n) => ({ ...n, uptime_ms: n.uptime_ms + 60_000, last_seen_ms_ago: 4_000 }));
    const a = snapshot(two);
    const b = snapshot(later, { generated_at: "2026-01-02T13:05:05.678Z" });
    b.this_node.uptime_ms = 61_000;
    expect(noticeable(b)).toBe(noticeable(a));
  });

  test("nodes, statuses, loads, running sub-tasks, counts and the NATS link are", () => {
    const base = noticeable(snapshot(two));
    const task = { task: "t1", request: "r-1", capability: "code", started_at: 0 };
    const variants = [
      snapshot([...two, node("claw-c")]),
      snapshot([two[0]!, { ...two[1]!, status: "offline" }]),
      snapshot([two[0]!, { ...two[1]!, running: 1, tasks: [task] }]),
      snapshot([two[0]!, { ...two[1]!, done: 1 }]),
      snapshot(two, { tasks: { queued: 3, running: 0, done: 0, failed: 0 } }),
      snapshot(two, {
        connections: {
          ...snapshot(two).connections,
          nats: { connected: false, state: "reconnecting", url: "nats://nats:4222", disconnects: 1 },
        },
      }),
    ];
    for (const v of variants) expect(noticeable(v)).not.toBe(base);
  });

  test("the first frame prints; then a change prints once the interval since the last frame has passed", () => {
    let now = 0;
    const gate = logFrameGate(5_000, () => now);
    const quiet = snapshot(two);
    const busy = snapshot([two[0]!, { ...two[1]!, status: "busy", running: 5 }]);
    expect(gate(quiet)).toBe(true);
    for (now = 1_000; now <= 60_000; now += 1_000) expect(gate(quiet)).toBe(false); // a minute with nothing new: no frame
    now = 61_000;
    expect(gate(busy)).toBe(true); // 60 s since the last frame: at once
    now = 62_000;
    expect(gate(quiet)).toBe(false); // changed back, but only 1 s later
    now = 65_000;
    expect(gate(quiet)).toBe(false);
    now = 66_000;
    expect(gate(quiet)).toBe(true); // the change still shows, at most every 5 s
    now = 67_000;
    expect(gate(busy)).toBe(false);
    now = 70_000;
    expect(gate(quiet)).toBe(false); // back to what was last printed: nothing to say
  });
});

describe("the live dashboard writing to a pipe", () => {
  let nats: NatsServer;
  const procs = reaper();
  beforeAll(async () => {
    nats = await startNatsServer();
  });
  afterAll(async () => {
    await procs.killAll();
    await nats.stop();
  });

  test("a frame when a worker joins and when it leaves; none while only heartbeats and clocks move", async () => {
    const hid = "dash-log";
    const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", hid, ...FAST];
    const dashboard = procs.track(spawnRole("dashboard.ts", args, { home: tempHome() }));
    const frames = () => dashboard.countLines(/PicoClaw Swarm Status Dashboard/);
    await dashboard.waitForLine(/Nodes: +0 total/, 20_000);
    expect(frames()).toBe(1);

    const worker = procs.track(spawnRole("worker.ts", [...args, "--swarm.capabilities", "code"], { home: tempHome() }));
    await dashboard.waitForLine(/Nodes: +1 total, 1 online/, LOG_FRAME_INTERVAL_MS + 15_000);
    expect(frames()).toBe(2);

    // Fifteen more heartbeats (200 ms apart: three of the dashboard's one-second refreshes and more):
    // uptimes and heartbeat ages moved, nothing a person would notice did.
    const nc = await connect({ servers: nats.url });
    let beats = 0;
    const sub = nc.subscribe(swarmNames(hid).heartbeatAll, {
      callback: () => {
        beats++;
      },
    });
    await waitFor("fifteen heartbeats", () => beats >= 15, 20_000);
    sub.unsubscribe();
    await nc.close();
    expect(frames()).toBe(2);

    worker.signal("SIGTERM");
    expect(await worker.exited(20_000)).toBe(0);
    await waitFor("a third frame, without the worker online", () => frames() === 3, LOG_FRAME_INTERVAL_MS + 15_000);
    expect(dashboard.output().split("PicoClaw Swarm Status Dashboard").at(-1)).not.toMatch(/1 online/);
    dashboard.signal("SIGINT");
    expect(await dashboard.exited()).toBe(0);
  }, 90_000);
});
