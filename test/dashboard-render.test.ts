import { describe, expect, test } from "bun:test";
import type { RunningTask } from "../lib/messages.ts";
import { frameForTerminal, loadBar, renderDashboard } from "../roles/dashboard/render.ts";
import { type DashboardSnapshot, type SnapshotNode, swarmStats, taskCounts, tokenCounts } from "../roles/dashboard/snapshot.ts";

const ESC = "\x1b";

function node(id: string, over: Partial<SnapshotNode> = {}): SnapshotNode {
  return {
    node: id,
    role: "worker",
    status: "online",
    capabilities: [],
    running: 0,
    max_concurrent: 5,
    uptime_ms: 0,
    last_seen_ms_ago: 0,
    version: "0.1.0",
    tasks: [],
    done: 0,
    failed: 0,
    bad_messages: { total: 0, by_subject: {}, refused: {} },
    tokens: tokenCounts([]),
    ...over,
  };
}

// The five-node swarm of the deployment guide, seen from worker claw-a1b2c3d4.
const GUIDE_NODES: SnapshotNode[] = [
  node("claw-coord-01", { role: "coordinator", running: 1 }),
  node("claw-a1b2c3d4", { running: 2 }),
  node("claw-e5f6g7h8", { running: 2 }),
  node("claw-i9j0k1l2", { status: "busy", running: 3 }),
  node("claw-m3n4o5p6", { running: 1 }),
];

function snapshot(over: Partial<DashboardSnapshot> = {}, nodes: SnapshotNode[] = GUIDE_NODES): DashboardSnapshot {
  const me = nodes.find((n) => n.node === "claw-a1b2c3d4") ?? node("claw-a1b2c3d4", { running: 2 });
  return {
    v: 1,
    generated_at: "2025-01-02T13:04:05.678Z",
    hid: "h-test",
    this_node: { ...me, uptime_ms: 2 * 3_600_000 + 15 * 60_000, sid: "s-1" },
    connections: {
      nats: { connected: true, state: "connected", url: "nats://localhost:4222", disconnects: 0 },
      temporal: { enabled: true, connected: true, address: "" },
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

function lines(s: DashboardSnapshot, color = false): string[] {
  return renderDashboard(s, { color }).split("\n");
}

describe("renderDashboard", () => {
  test("renders the guide's example lines exactly", () => {
    // The guide's rows add up to 9 running tasks yet it prints "8/25"; the renderer must show s.stats
    // as given (never recompute), so the guide's figure is passed in here.
    const s = snapshot();
    s.stats.capacity.used = 8;
    const out = lines(s);
    const expected = [
      "╔════════════════════════════════════════════════════════════╗",
      "║           PicoClaw Swarm Status Dashboard                  ║",
      "╚════════════════════════════════════════════════════════════╝",
      "【This Node】",
      "  ID:    claw-a1b2c3d4",
      "  Role:  ⚙️ worker",
      "  Status: ● online",
      "  Load:  [████░░░░░] 40% (2/5)",
      "  Uptime: 2h15m",
      "  NATS:     ✓ Yes nats://localhost:4222",
      "  Temporal: ✓ Yes",
      "  Nodes:      5 total, 5 online, 0 offline",
      "  Roles:      1 coordinator(s), 4 worker(s), 0 specialist(s)",
      "  Capacity:   8/25 tasks used",
      "  ● claw-coord-01          C online    [██░░░░░░░] 20% (1/5)",
      "  ● claw-a1b2c3d4          W online    [████░░░░░] 40% (2/5)",
      "  ● claw-e5f6g7h8          W online    [████░░░░░] 40% (2/5)",
      "  ● claw-i9j0k1l2          W busy      [█████░░░░] 60% (3/5)",
      "  ● claw-m3n4o5p6          W online    [██░░░░░░░] 20% (1/5)",
    ];
    for (const line of expected) expect(out).toContain(line);
  });

  test("node rows follow the Discovered Nodes heading in order, then the H-id footer", () => {
    const out = lines(snapshot());
    const at = out.indexOf("【Discovered Nodes】");
    expect(out.slice(at + 1, at + 6).map((l) => l.slice(4, 17))).toEqual(GUIDE_NODES.map((n) => n.node));
    expect(out.slice(-2)).toEqual(["", "  Swarm H-id: h-test   updated 13:04:05"]);
  });

  test("an offline node shows offline and counts as offline", () => {
    const nodes = [node("claw-a1b2c3d4", { running: 2 }), node("claw-dead", { status: "offline" })];
    const out = lines(snapshot({}, nodes));
    expect(out).toContain("  ● claw-dead              W offline   [░░░░░░░░░] 0% (0/5)");
    expect(out).toContain("  Nodes:      2 total, 1 online, 1 offline");
    expect(out).toContain("  Capacity:   2/5 tasks used");
  });

  test("disconnected NATS shows ✗ and the connection state", () => {
    const s = snapshot();
    s.connections.nats = { connected: false, state: "reconnecting", url: "nats://localhost:4222", disconnects: 3 };
    expect(lines(s)).toContain("  NATS:     ✗ No  nats://localhost:4222 (reconnecting)");
  });

  test("Temporal enabled but down, and Temporal off", () => {
    const down = snapshot();
    down.connections.temporal = { enabled: true, connected: false, address: "localhost:7233" };
    expect(lines(down)).toContain("  Temporal: ✗ No  localhost:7233 (workflows disabled)");
    const off = snapshot();
    off.connections.temporal = { enabled: false, connected: false, address: "" };
    expect(lines(off)).toContain("  Temporal: – off");
  });

  test("no escape codes without color; colored dots with color", () => {
    const nodes = [node("a"), node("b", { status: "busy" }), node("c", { status: "offline" })];
    const s = snapshot({}, nodes);
    expect(renderDashboard(s)).not.toContain(ESC);
    expect(renderDashboard(s, { color: false })).not.toContain(ESC);
    const colored = renderDashboard(s, { color: true });
    expect(colored).toContain(`${ESC}[32m●${ESC}[0m a `);
    expect(colored).toContain(`${ESC}[33m●${ESC}[0m b `);
    expect(colored).toContain(`${ESC}[31m●${ESC}[0m c `);
  });

  test("an observer's load line says it runs no tasks", () => {
    const s = snapshot({}, []);
    s.this_node = { ...node("claw-dash", { role: "dashboard", max_concurrent: 0 }), sid: "s-2" };
    const out = lines(s);
    expect(out).toContain("  Role:  📊 dashboard");
    expect(out).toContain("  Load:  observer (runs no tasks)");
  });

  test("empty node list says it is waiting for heartbeats", () => {
    const out = lines(snapshot({}, []));
    expect(out).toContain("  (no nodes yet — waiting for heartbeats)");
    expect(out).toContain("  Nodes:      0 total, 0 online, 0 offline");
  });

  test("malformed messages are reported only when there were some", () => {
    expect(renderDashboard(snapshot())).not.toContain("Dropped malformed");
    const s = snapshot({ bad_messages: { total: 7, by_subject: { "swarm.x": 7 }, refused: {} } });
    const out = lines(s);
    expect(out[out.findIndex((l) => l.startsWith("  Tasks:")) + 1]).toBe("  Dropped malformed messages: 7");
  });

  test("long node ids are not cut", () => {
    const id = "claw-a-very-long-node-identifier";
    expect(renderDashboard(snapshot({}, [node(id)]))).toContain(`  ● ${id} W online    [`);
  });

  test("a suspicious node keeps a space before its load bar", () => {
    const out = lines(snapshot({}, [node("claw-x", { status: "suspicious", running: 1 })]));
    expect(out).toContain("  ● claw-x                 W suspicious [██░░░░░░░] 20% (1/5)");
  });
});

const GENERATED = Date.parse("2025-01-02T13:04:05.678Z");

function running(n: number, over: Partial<RunningTask> = {}): RunningTask[] {
  return Array.from({ length: n }, (_, i) => ({
    request: "r-0123456789",
    task: `t${i + 1}`,
    capability: "code",
    started_at: GENERATED - (i + 1) * 1_000,
    ...over,
  }));
}

describe("renderDashboard: tasks", () => {
  test("the Tasks line follows Capacity and shows the snapshot's counts", () => {
    const s = snapshot();
    s.tasks = { queued: 3, running: 9, done: 42, failed: 1 };
    const out = lines(s);
    const at = out.indexOf("  Capacity:   9/25 tasks used");
    expect(at).toBeGreaterThan(0);
    expect(out[at + 1]).toBe("  Tasks:      3 queued, 9 running, 42 done, 1 failed");
  });

  test("the guide's example has no task lines: every line in Discovered Nodes is a node row", () => {
    const out = lines(snapshot());
    const at = out.indexOf("【Discovered Nodes】");
    expect(out.slice(at + 1, at + 6).every((l) => l.startsWith("  ● "))).toBe(true);
    expect(out[at + 6]).toBe("");
    expect(renderDashboard(snapshot())).not.toContain("↳");
  });

  test("each running task gets an indented line under its node: task, capability, request, elapsed", () => {
    const nodes = [
      node("claw-a1b2c3d4", { running: 2, tasks: running(2) }),
      node("claw-b", {
        running: 1,
        tasks: [{ request: "r-x", task: "security", capability: "security", started_at: GENERATED - 125_000 }],
      }),
      node("claw-c"),
    ];
    const s = snapshot({}, nodes);
    const out = lines(s);
    const at = out.indexOf("【Discovered Nodes】");
    expect(out.slice(at + 1, at + 7)).toEqual([
      "  ● claw-a1b2c3d4          W online    [████░░░░░] 40% (2/5)",
      "      ↳ t2 (code) r-0123456789 2s",
      "      ↳ t1 (code) r-0123456789 1s",
      "  ● claw-b                 W online    [██░░░░░░░] 20% (1/5)",
      "      ↳ security (security) r-x 2m5s",
      "  ● claw-c                 W online    [░░░░░░░░░] 0% (0/5)",
    ]);
    expect(out).toContain("  Tasks:      0 queued, 3 running, 0 done, 0 failed");
  });

  test("oldest task first; a task started just now shows milliseconds, never a negative time", () => {
    const tasks = [
      { request: "r-1", task: "new", capability: "general", started_at: GENERATED + 50 },
      { request: "r-1", task: "old", capability: "general", started_at: GENERATED - 3_600_000 * 2 - 60_000 * 15 },
      { request: "r-1", task: "mid", capability: "general", started_at: GENERATED - 750 },
    ];
    const out = lines(snapshot({}, [node("claw-a1b2c3d4", { running: 3, tasks })]));
    const at = out.indexOf("  ● claw-a1b2c3d4          W online    [█████░░░░] 60% (3/5)");
    expect(out.slice(at + 1, at + 4)).toEqual([
      "      ↳ old (general) r-1 2h15m",
      "      ↳ mid (general) r-1 750ms",
      "      ↳ new (general) r-1 0ms",
    ]);
  });

  test("at most five task lines per node, then how many more", () => {
    const out = lines(snapshot({}, [node("claw-big", { running: 8, max_concurrent: 8, status: "busy", tasks: running(8) })]));
    const at = out.findIndex((l) => l.startsWith("  ● claw-big"));
    expect(out.slice(at + 1, at + 8)).toEqual([
      "      ↳ t8 (code) r-0123456789 8s",
      "      ↳ t7 (code) r-0123456789 7s",
      "      ↳ t6 (code) r-0123456789 6s",
      "      ↳ t5 (code) r-0123456789 5s",
      "      ↳ t4 (code) r-0123456789 4s",
      "      … and 3 more",
      "",
    ]);
  });

  test("an offline node's last reported tasks are not listed and not counted as running", () => {
    const nodes = [node("claw-a1b2c3d4"), node("claw-dead", { status: "offline", running: 2, tasks: running(2), done: 4, failed: 1 })];
    const s = snapshot({}, nodes);
    expect(s.tasks).toEqual({ queued: 0, running: 0, done: 4, failed: 1 });
    const out = lines(s);
    expect(out).toContain("  Tasks:      0 queued, 0 running, 4 done, 1 failed");
    expect(renderDashboard(s)).not.toContain("↳");
  });
});

describe("taskCounts", () => {
  test("running over live nodes, done and failed over every node, queued as given", () => {
    const nodes = [
      node("a", { running: 2, done: 3, failed: 1 }),
      node("b", { status: "busy", running: 5, done: 10 }),
      node("c", { status: "offline", running: 1, done: 2, failed: 2 }),
    ];
    expect(taskCounts(nodes, 7)).toEqual({ queued: 7, running: 7, done: 15, failed: 3 });
    expect(taskCounts([], 0)).toEqual({ queued: 0, running: 0, done: 0, failed: 0 });
  });
});

describe("loadBar", () => {
  test("0/0 is an empty bar, not NaN", () => {
    expect(loadBar(0, 0)).toBe("[░░░░░░░░░] 0% (0/0)");
  });
  test("5/5 is a full bar", () => {
    expect(loadBar(5, 5)).toBe("[█████████] 100% (5/5)");
  });
  test("overload never draws more than nine cells", () => {
    expect(loadBar(7, 5)).toBe("[█████████] 140% (7/5)");
  });
});

describe("frameForTerminal", () => {
  test("homes the cursor and clears before the frame", () => {
    expect(frameForTerminal("x")).toBe("\x1b[H\x1b[2Jx");
  });
});

describe("tokens on the dashboard", () => {
  const counts = (prompt: number, completion: number, by_capability: Record<string, number>, by_model: Record<string, number>) => ({
    prompt,
    completion,
    total: prompt + completion,
    by_capability,
    by_model,
  });

  test("the swarm's tokens by capability and model, and each node's total on its row", () => {
    const nodes = [
      node("claw-coord-01", { role: "coordinator", tokens: counts(900, 300, { "(synthesis)": 1_200 }, { "gpt-4o-mini": 1_200 }) }),
      node("claw-a1b2c3d4", { tokens: counts(10_000, 2_345, { code: 12_345 }, { "gpt-4o-mini": 12_345 }) }),
      node("claw-e5f6g7h8"),
    ];
    const out = lines(snapshot({}, nodes));
    const at = out.findIndex((l) => l.startsWith("  Tokens:"));
    expect(out.slice(at, at + 3)).toEqual([
      "  Tokens:     13.5k (10.9k prompt, 2.65k completion)",
      "              by capability: code 12.3k, (synthesis) 1.2k",
      "              by model: gpt-4o-mini 13.5k",
    ]);
    expect(out).toContain("  ● claw-a1b2c3d4          W online    [░░░░░░░░░] 0% (0/5)  12.3k tokens");
    expect(out).toContain("  ● claw-coord-01          C online    [░░░░░░░░░] 0% (0/5)  1.2k tokens");
    expect(out).toContain("  ● claw-e5f6g7h8          W online    [░░░░░░░░░] 0% (0/5)"); // none used: nothing added
  });

  test("no tokens yet: one line with zeros", () => {
    const out = lines(snapshot());
    expect(out).toContain("  Tokens:     0 (0 prompt, 0 completion)");
    expect(out.some((l) => l.includes("by capability"))).toBe(false);
  });
});
