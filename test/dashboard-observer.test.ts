// The dashboard role only ever observes: with the guide's ~/.picoclaw/config.yaml (swarm.enabled: true,
// role: coordinator, or role: worker) `roles/dashboard.ts` and `dist/picoclaw-dashboard` never join as
// a member, while `picoclaw --swarm.dashboard` on that configured node keeps the guide's meaning: the
// node's own view, "This Node" being its role.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { guideConfigHome } from "./helpers/guide-config.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";

let nats: NatsServer;
const procs = reaper();
beforeAll(async () => {
  nats = await startNatsServer();
});
afterEach(() => procs.killAll());
afterAll(() => nats.stop());

describe.each(["coordinator", "worker"] as const)("the guide's config file with role: %s", (role) => {
  test("the dashboard script observes without joining; the one member sees nobody join", async () => {
    const hid = `obs-${role}`;
    // The test's NATS server and H-id, on the command line over the file's nats://localhost:4222.
    const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", hid, ...FAST];
    const home = guideConfigHome(role);
    const member = procs.track(spawnRole("worker.ts", [...args, "--swarm.capabilities", "code"], { home: tempHome() }));
    await member.waitForLine(/Node joined swarm .*self=true/);

    // (The compiled dist/picoclaw-dashboard is checked the same way in test/compiled.test.ts.)
    const r = await runRole("dashboard.ts", ["--json", ...args], { home });
    expect(r.code).toBe(0);
    const snap = JSON.parse(r.stdout) as DashboardSnapshot;
    expect(snap.this_node.role).toBe("dashboard");
    expect(snap.nodes.map((n) => n.role)).toEqual(["worker"]);
    expect(snap.stats.nodes.total).toBe(1);
    // Live, as the guide runs it: one frame drawn, still no member joined.
    // Frames in a log come at most every log.dashboard_interval (5 s); the one after discovery at once here.
    const live = procs.track(spawnRole("dashboard.ts", [...args, "--log.dashboard_interval", "0s"], { home }));
    await live.waitForLine(/Nodes: +1 total, 1 online, 0 offline/);
    expect(live.output()).toContain("Role:  📊 dashboard");
    live.signal("SIGINT");
    expect(await live.exited()).toBe(0);
    // Nobody but the member itself ever joined this swarm.
    expect(member.lines.filter((l) => l.includes("Node joined swarm") && !l.includes("self=true"))).toEqual([]);
  });
});

test("picoclaw --swarm.dashboard with the guide's config file is that node's own view: This Node is the coordinator", async () => {
  const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", "obs-self", ...FAST];
  const r = await runRole("picoclaw.ts", ["--swarm.dashboard", "--once", ...args], { home: guideConfigHome("coordinator") });
  expect(r.code).toBe(0);
  expect(r.stdout).toContain("Role:  🎯 coordinator");
  expect(r.stdout).toMatch(/Roles: +1 coordinator\(s\), 0 worker\(s\), 0 specialist\(s\)/);
});
