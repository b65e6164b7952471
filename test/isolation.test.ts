// Swarm isolation by H-id, the deployment-wide default H-id, and a shared embedded nats-server.
// Real nats-server, real role processes; every wait is bounded.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { freePort, portOpen } from "../lib/embedded-nats.ts";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, type RoleProcess, reaper, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

const BOUND = 15_000;

/** The node id a role process announces for itself. */
async function selfId(p: RoleProcess): Promise<string> {
  const line = await p.waitForLine(/Node joined swarm node=\S+ .*self=true/, BOUND);
  return /node=(\S+)/.exec(line)![1]!;
}

const joinedLine = (id: string) => new RegExp(`Node joined swarm node=${id} `);

/** One `dashboard.ts --json` run (exit 0 required), parsed. */
async function dashboardJson(url: string, hid?: string): Promise<DashboardSnapshot> {
  const args = ["--json", "--swarm.nats.urls", url, ...(hid ? ["--swarm.hid", hid] : [])];
  const p = spawnRole("dashboard.ts", args, { home: tempHome() });
  const code = await p.exited(BOUND);
  if (code !== 0) throw new Error(`dashboard --json exited ${code}:\n${p.output()}`);
  return JSON.parse(p.stdout.join("\n")) as DashboardSnapshot;
}

/** Polls the dashboard until `ok` holds; returns that snapshot. */
function dashboardUntil(what: string, url: string, hid: string | undefined, ok: (s: DashboardSnapshot) => boolean) {
  return waitFor(
    what,
    async () => {
      const s = await dashboardJson(url, hid);
      if (ok(s)) return s;
      // Shown by waitFor as "last saw" if it times out.
      throw new Error(`hid=${s.hid} nodes=${JSON.stringify(s.nodes.map((n) => [n.node, n.role, n.status]))}`);
    },
    30_000,
    100,
  );
}

const ids = (s: DashboardSnapshot) => s.nodes.map((n) => n.node).sort();

describe("H-id isolation on one nats-server", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  const procs = reaper();

  beforeAll(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url, name: "isolation-watcher" });
  });
  afterAll(async () => {
    await nc?.close().catch(() => {});
    await procs.killAll();
    await nats?.stop();
  });

  test("nodes of H-id alpha and H-id beta never see each other", async () => {
    // Count heartbeats of every swarm on the server, per H-id and node.
    const beats = new Map<string, number>();
    const watch = nc.subscribe("picoclaw.*.node.heartbeat.*", {
      callback: (_err, m) => {
        const [, hid, , , node] = m.subject.split(".");
        const key = `${hid}/${node}`;
        beats.set(key, (beats.get(key) ?? 0) + 1);
      },
    });
    const at = (hid: string) => ["--swarm.hid", hid, "--swarm.nats.urls", nats.url, ...FAST];
    const a1 = procs.track(spawnRole("coordinator.ts", at("alpha")));
    const a2 = procs.track(spawnRole("worker.ts", at("alpha")));
    const b1 = procs.track(spawnRole("worker.ts", at("beta")));
    const [a1Id, a2Id, b1Id] = [await selfId(a1), await selfId(a2), await selfId(b1)];

    await a1.waitForLine(joinedLine(a2Id), BOUND);
    await a2.waitForLine(joinedLine(a1Id), BOUND);

    // Enough time for any leak to show: at least 5 heartbeats of every node have crossed the server.
    await waitFor(
      `5 heartbeats of each node (saw ${JSON.stringify(Object.fromEntries(beats))})`,
      () => [`alpha/${a1Id}`, `alpha/${a2Id}`, `beta/${b1Id}`].every((k) => (beats.get(k) ?? 0) >= 5),
      BOUND,
    );
    // And the dashboards of each swarm have settled on exactly their own members.
    const alpha = await dashboardUntil(
      "alpha's dashboard to show exactly A1 and A2",
      nats.url,
      "alpha",
      (s) => s.nodes.length === 2 && s.nodes.every((n) => n.status === "online"),
    );
    expect(ids(alpha)).toEqual([a1Id, a2Id].sort());
    expect(alpha.hid).toBe("alpha");
    const beta = await dashboardUntil(
      "beta's dashboard to show exactly B1",
      nats.url,
      "beta",
      (s) => s.nodes.length === 1 && s.nodes[0]!.status === "online",
    );
    expect(ids(beta)).toEqual([b1Id]);
    expect(beta.hid).toBe("beta");

    // Heartbeats only ever went to each node's own H-id.
    expect([...beats.keys()].sort()).toEqual([`alpha/${a1Id}`, `alpha/${a2Id}`, `beta/${b1Id}`].sort());
    // No process of one swarm ever logged a node of the other.
    const leaks = (p: RoleProcess, foreign: string[]) => p.lines.filter((l) => foreign.some((id) => l.includes(id)));
    expect(leaks(b1, [a1Id, a2Id])).toEqual([]);
    expect(leaks(a1, [b1Id])).toEqual([]);
    expect(leaks(a2, [b1Id])).toEqual([]);
    for (const p of [a1, a2, b1]) expect(p.proc.exitCode).toBeNull();
    watch.unsubscribe();
  }, 90_000);
});

describe("default H-id adopted from the deployment", () => {
  let nats: NatsServer;
  const procs = reaper();

  beforeAll(async () => {
    nats = await startNatsServer(); // fresh: no H-id stored yet
  });
  afterAll(async () => {
    await procs.killAll();
    await nats?.stop();
  });

  test("two nodes without --swarm.hid adopt the same generated H-id and see each other", async () => {
    const args = ["--swarm.nats.urls", nats.url, ...FAST, "--log.level", "debug"];
    const w1 = procs.track(spawnRole("worker.ts", args));
    const w2 = procs.track(spawnRole("worker.ts", args));
    const [w1Id, w2Id] = [await selfId(w1), await selfId(w2)];
    await w1.waitForLine(joinedLine(w2Id), BOUND);
    await w2.waitForLine(joinedLine(w1Id), BOUND);

    // Exactly one of them created the H-id, the other adopted it.
    const hidOf = async (p: RoleProcess) => {
      const line = await p.waitForLine(/Using the deployment's default H-id hid=\S+ how=(created|adopted)/, BOUND);
      return { hid: /hid=(\S+)/.exec(line)![1]!, how: /how=(\S+)/.exec(line)![1]! };
    };
    const [h1, h2] = [await hidOf(w1), await hidOf(w2)];
    expect(h1.hid).toBe(h2.hid);
    expect([h1.how, h2.how].sort()).toEqual(["adopted", "created"]);
    expect(h1.hid).toMatch(/^[A-Za-z0-9_-]{1,64}$/);

    // Dashboards without --swarm.hid adopt it too, and list both nodes.
    const both = (s: DashboardSnapshot) => [w1Id, w2Id].every((id) => s.nodes.some((n) => n.node === id && n.status === "online"));
    const d1 = await dashboardUntil("a dashboard without --swarm.hid listing both nodes", nats.url, undefined, both);
    const d2 = await dashboardUntil("a second dashboard without --swarm.hid listing both nodes", nats.url, undefined, both);
    expect(d1.hid).toBe(h1.hid);
    expect(d2.hid).toBe(d1.hid);
    expect(ids(d1)).toEqual([w1Id, w2Id].sort());
    expect(ids(d2)).toEqual([w1Id, w2Id].sort());
  }, 90_000);
});

describe("embedded nats-server shared by local nodes", () => {
  const procs = reaper();
  let home: string | undefined;
  let port = 0;

  /** The embedded server is detached by design: if a test fails, stop it here rather than leak it. */
  afterEach(async () => {
    await procs.killAll();
    if (!home) return;
    try {
      const state = JSON.parse(readFileSync(join(home, ".picoclaw", "nats", `port-${port}`, "embedded.json"), "utf8")) as { pid: number };
      process.kill(state.pid, "SIGKILL");
    } catch {
      /* stopped normally */
    }
    rmSync(home, { recursive: true, force: true });
  });

  test("the first node starts it, the second joins, the last one to stop stops it", async () => {
    home = tempHome();
    port = await freePort();
    const args = ["--swarm.nats.embedded", "--swarm.nats.embedded-port", String(port), "--swarm.hid", "emb", ...FAST];
    const first = procs.track(spawnRole("worker.ts", args, { home }));
    await first.waitForLine(/Embedded NATS started/, BOUND);
    const firstId = await selfId(first);
    const second = procs.track(spawnRole("worker.ts", args, { home }));
    await second.waitForLine(/Embedded NATS already running, joining it/, BOUND);
    const secondId = await selfId(second);
    await first.waitForLine(joinedLine(secondId), BOUND);
    await second.waitForLine(joinedLine(firstId), BOUND);
    expect(second.countLines(/Embedded NATS started/)).toBe(0);

    // The first one stops: the server stays up for the second, which only sees a graceful leave.
    first.signal("SIGTERM");
    expect(await first.exited(BOUND)).toBe(0);
    expect(first.countLines(/Embedded NATS left running for other local nodes/)).toBe(1);
    expect(first.countLines(/Embedded NATS stopped/)).toBe(0);
    await second.waitForLine(new RegExp(`Node left swarm node=${firstId} `), BOUND);
    expect(await portOpen("127.0.0.1", port)).toBe(true);
    const url = `nats://127.0.0.1:${port}`;
    const snap = await dashboardUntil(
      "the dashboard to show only the second node",
      url,
      "emb",
      (s) => s.nodes.length === 1 && s.nodes[0]!.node === secondId && s.nodes[0]!.status === "online",
    );
    expect(snap.connections.nats.connected).toBe(true);
    expect(second.proc.exitCode).toBeNull();
    expect(second.lines.filter((l) => /NATS disconnected/.test(l))).toEqual([]);
    expect(second.lines.filter((l) => /Node marked offline/.test(l))).toEqual([]);

    // The last one stops: nobody is left, so it stops the server and the port closes.
    second.signal("SIGTERM");
    expect(await second.exited(BOUND)).toBe(0);
    expect(second.countLines(/Embedded NATS stopped/)).toBe(1);
    expect(second.lines.filter((l) => /NATS disconnected/.test(l))).toEqual([]);
    await waitFor(`embedded port ${port} to close`, async () => !(await portOpen("127.0.0.1", port, 200)), BOUND);
  }, 90_000);

  // The demo's stop: every node gets SIGTERM at once, so each may find no other client left. One of them
  // stops the server; the others must not report stopping it too.
  test("three nodes stopped at the same moment: exactly one stops the server, and it is stopped", async () => {
    home = tempHome();
    port = await freePort();
    const args = ["--swarm.nats.embedded", "--swarm.nats.embedded-port", String(port), "--swarm.hid", "emb3", ...FAST];
    const first = procs.track(spawnRole("worker.ts", args, { home }));
    await first.waitForLine(/Embedded NATS started/, BOUND);
    const nodes = [first, procs.track(spawnRole("worker.ts", args, { home })), procs.track(spawnRole("worker.ts", args, { home }))];
    const nodeIds = await Promise.all(nodes.map(selfId));
    for (const node of nodes) for (const id of nodeIds) await node.waitForLine(joinedLine(id), BOUND);

    for (const node of nodes) node.signal("SIGTERM");
    expect(await Promise.all(nodes.map((n) => n.exited(BOUND)))).toEqual([0, 0, 0]);
    const stopped = nodes.map((n) => n.countLines(/Embedded NATS stopped/));
    const leftRunning = nodes.map((n) => n.countLines(/Embedded NATS left running/));
    // One stopper; a node that found another client still connected may say it left the server running.
    expect({ stopped: stopped.reduce((a, b) => a + b, 0) }).toEqual({ stopped: 1 });
    expect(stopped.map((c, i) => c + leftRunning[i]!).every((c) => c <= 1)).toBe(true);
    await waitFor(`embedded port ${port} to close`, async () => !(await portOpen("127.0.0.1", port, 200)), BOUND);
  }, 90_000);
});
