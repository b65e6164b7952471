// Membership as users see it: nodes join, a killed node is marked offline in time, a stopped one leaves.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole } from "./helpers/role-process.ts";

const HEARTBEAT_MS = 200;
const NODE_TIMEOUT_MS = 1500;
// Scheduling slack for a loaded 2-core box (timer lag, log pipe); the product bound is timeout + interval.
const SLACK_MS = 1_500;

let nats: NatsServer;
const procs = reaper();
beforeAll(async () => {
  nats = await startNatsServer();
});
afterEach(() => procs.killAll());
afterAll(() => nats.stop());

function common(hid: string) {
  return ["--swarm.nats.urls", nats.url, "--swarm.hid", hid, ...FAST];
}

function nodeIdOf(lines: string[]): string {
  const line = lines.find((l) => l.includes("Node joined swarm") && l.includes("self=true"));
  const id = line?.match(/node=(\S+)/)?.[1];
  if (!id) throw new Error(`no self join line in:\n${lines.join("\n")}`);
  return id;
}

async function snapshot(hid: string): Promise<DashboardSnapshot> {
  const r = await runRole("dashboard.ts", ["--json", ...common(hid)]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as DashboardSnapshot;
}

describe("membership", () => {
  test("three roles join, see each other, and the dashboard --json lists them with roles and capabilities", async () => {
    const coord = procs.track(spawnRole("coordinator.ts", [...common("m1"), "--swarm.capabilities", "coordination"]));
    const worker = procs.track(spawnRole("worker.ts", [...common("m1"), "--swarm.capabilities", "code,research"]));
    const spec = procs.track(spawnRole("specialist.ts", [...common("m1"), "--swarm.capabilities", "rust,embedded"]));
    for (const p of [coord, worker, spec]) await p.waitForLine(/Node joined swarm .*self=true/);
    const ids = [coord, worker, spec].map((p) => nodeIdOf(p.lines));
    // Every node logs every other node's join.
    for (const p of [coord, worker, spec]) {
      for (const id of ids) await p.waitForLine(new RegExp(`Node joined swarm node=${id}\\b`));
    }
    // A heartbeat late by 2 intervals (a loaded machine) shows as "suspicious" for a moment: look again.
    let snap = await snapshot("m1");
    for (let i = 0; i < 5 && snap.nodes.some((n) => n.status !== "online"); i++) snap = await snapshot("m1");
    expect(snap.hid).toBe("m1");
    expect(snap.this_node.role).toBe("dashboard");
    const byId = Object.fromEntries(snap.nodes.map((n) => [n.node, n]));
    expect(byId[ids[0]!]).toMatchObject({ role: "coordinator", status: "online", capabilities: ["coordination"] });
    expect(byId[ids[1]!]).toMatchObject({ role: "worker", status: "online", capabilities: ["code", "research"], max_concurrent: 5 });
    expect(byId[ids[2]!]).toMatchObject({ role: "specialist", status: "online", capabilities: ["rust", "embedded"] });
    expect(snap.stats.nodes).toMatchObject({ total: 3, online: 3, offline: 0 });
    expect(snap.stats.roles).toEqual({ coordinator: 1, worker: 1, specialist: 1 });
    expect(snap.stats.capacity).toEqual({ used: 0, total: 15 });
    expect(snap.connections.nats).toMatchObject({ connected: true, url: nats.url });
  });

  test("SIGKILL: every peer logs 'Node marked offline' within node_timeout + heartbeat_interval; the dashboard shows it offline", async () => {
    const coord = procs.track(spawnRole("coordinator.ts", common("m2")));
    const other = procs.track(spawnRole("worker.ts", common("m2")));
    const victim = procs.track(spawnRole("worker.ts", [...common("m2"), "--swarm.capabilities", "code"]));
    const board = procs.track(spawnRole("dashboard.ts", [...common("m2"), "--log.dashboard_interval", "0s"]));
    await victim.waitForLine(/self=true/);
    const id = nodeIdOf(victim.lines);
    for (const p of [coord, other]) await p.waitForLine(new RegExp(`Node joined swarm node=${id}\\b`));
    await board.waitForLine(new RegExp(`● ${id}\\s+W online`));

    const killedAt = Date.now();
    victim.signal("SIGKILL");
    for (const p of [coord, other]) {
      const line = await p.waitForLine(new RegExp(`Node marked offline node=${id} role=worker`), 10_000);
      const detectedAt = Date.parse(line.slice(0, 24));
      expect(detectedAt - killedAt).toBeLessThanOrEqual(NODE_TIMEOUT_MS + HEARTBEAT_MS + SLACK_MS);
      expect(p.countLines(/Node left swarm/)).toBe(0);
    }
    await board.waitForLine(new RegExp(`● ${id}\\s+W offline`), 5_000);
    await board.waitForLine(/Nodes:\s+3 total, 2 online, 1 offline/, 5_000);
  });

  test("SIGTERM and SIGINT: the node announces its leave, exits 0, and is never reported offline", async () => {
    const coord = procs.track(spawnRole("coordinator.ts", common("m3")));
    const a = procs.track(spawnRole("worker.ts", common("m3")));
    const b = procs.track(spawnRole("specialist.ts", [...common("m3"), "--swarm.capabilities", "security"]));
    for (const p of [a, b]) await p.waitForLine(/self=true/);
    const [idA, idB] = [nodeIdOf(a.lines), nodeIdOf(b.lines)];
    await coord.waitForLine(new RegExp(`Node joined swarm node=${idA}\\b`));
    await coord.waitForLine(new RegExp(`Node joined swarm node=${idB}\\b`));

    a.signal("SIGTERM");
    b.signal("SIGINT");
    expect(await a.exited()).toBe(0);
    expect(await b.exited()).toBe(0);
    await coord.waitForLine(new RegExp(`Node left swarm node=${idA} role=worker reason=graceful`));
    await coord.waitForLine(new RegExp(`Node left swarm node=${idB} role=specialist reason=graceful`));
    // Wait past the point where a silent node would have been declared offline, then check it was not.
    const check = procs.track(spawnRole("worker.ts", common("m3")));
    await check.waitForLine(/self=true/);
    await coord.waitForLine(new RegExp(`Node joined swarm node=${nodeIdOf(check.lines)}\\b`));
    const deadline = Date.now() + NODE_TIMEOUT_MS + 2 * HEARTBEAT_MS;
    // The nodes that left are never reported offline (a node still running, slow on a loaded machine,
    // is not what this checks).
    const leftOffline = new RegExp(`Node marked offline node=(${idA}|${idB})\\b`);
    while (Date.now() < deadline) {
      expect(coord.countLines(leftOffline)).toBe(0);
      await Bun.sleep(HEARTBEAT_MS);
    }
    const snap = await snapshot("m3");
    expect(snap.nodes.map((n) => n.node)).not.toContain(idA);
    expect(snap.nodes.map((n) => n.node)).not.toContain(idB);
  });

  test("a node stopped over NATS control (shutdown) leaves cleanly", async () => {
    const { connect } = await import("nats");
    const { swarmNames } = await import("../lib/subjects.ts");
    const w = procs.track(spawnRole("worker.ts", common("m4")));
    await w.waitForLine(/self=true/);
    const nc = await connect({ servers: nats.url });
    try {
      const names = swarmNames("m4");
      const reply = await nc.request(names.control(nodeIdOf(w.lines)), new TextEncoder().encode('{"v":1,"action":"ping"}'), {
        timeout: 5_000,
      });
      expect(JSON.parse(new TextDecoder().decode(reply.data))).toMatchObject({ ok: true, detail: "pong" });
      await nc.request(names.control(nodeIdOf(w.lines)), new TextEncoder().encode('{"v":1,"action":"shutdown"}'), { timeout: 5_000 });
      expect(await w.exited()).toBe(0);
      expect(w.output()).toContain("Node left swarm");
    } finally {
      await nc.close();
    }
  });
});
