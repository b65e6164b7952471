import { describe, expect, test } from "bun:test";
import { frameForTerminal, loadBar, renderDashboard } from "../lib/dashboard.ts";
import { type DashboardSnapshot, type SnapshotNode, swarmStats } from "../lib/snapshot.ts";

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
    nodes,
    bad_messages: { total: 0, by_subject: {} },
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
    const s = snapshot({ bad_messages: { total: 7, by_subject: { "swarm.x": 7 } } });
    const out = lines(s);
    expect(out[out.findIndex((l) => l.startsWith("  Capacity:")) + 1]).toBe("  Dropped malformed messages: 7");
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
