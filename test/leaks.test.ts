// Nothing grows with restarts or time, and a fresh dashboard knows who died before it started:
// per-node queues go with their node (or are swept after a crash), the registry is bounded under spoofed
// heartbeats, streams and consumers follow changed config, and stored heartbeats show the dead as offline.
import { describe, expect, test } from "bun:test";
import { AckPolicy, connect, type NatsConnection } from "nats";
import { encode, type NodeInfo } from "../lib/messages.ts";
import { swarmNames } from "../lib/subjects.ts";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { FAST, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { selfId } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const procs = reaper();
const HEARTBEAT_MS = 200;
const NODE_TIMEOUT_MS = 1_500;

async function directQueues(nc: NatsConnection, hid: string): Promise<string[]> {
  const names = swarmNames(hid);
  const jsm = await nc.jetstreamManager();
  const out: string[] = [];
  for await (const ci of jsm.consumers.list(names.streams.tasks)) if (names.consumers.parse(ci.name)?.kind === "direct") out.push(ci.name);
  return out;
}

async function snapshot(hid: string, extra: string[] = []): Promise<DashboardSnapshot> {
  const r = await runRole("dashboard.ts", ["--json", "--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST, ...extra]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as DashboardSnapshot;
}

describe("nothing leaks", () => {
  test("50 worker restarts (half killed, half stopped) leave the direct queues flat", async () => {
    const hid = "leak1";
    const args = ["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST];
    const home = tempHome();
    procs.track(spawnRole("coordinator.ts", args, { home, env: ECHO_ENV }));
    const nc = await connect({ servers: suite.nats.url });
    try {
      for (let i = 0; i < 50; i++) {
        const w = procs.track(spawnRole("worker.ts", args, { home, env: ECHO_ENV }));
        await w.waitForLine(/Node joined swarm .*self=true/, 15_000);
        w.signal(i % 2 === 0 ? "SIGKILL" : "SIGTERM");
        await w.exited(15_000).catch(() => {});
      }
      // Stopped workers delete their own queue; the leader sweeps the crashed ones' once they are offline.
      await waitFor("the direct queues of 50 gone workers removed", async () => (await directQueues(nc, hid)).length === 0, 30_000);
    } finally {
      await nc.close();
      await procs.killAll();
    }
  }, 180_000);

  test("the registry is bounded: 500 spoofed nodes, a limit of 50, and the real ones still known", async () => {
    const hid = "leak2";
    const args = ["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST, "--swarm.max_nodes", "50"];
    const peer = procs.track(spawnRole("worker.ts", args, { env: ECHO_ENV }));
    await peer.waitForLine(/Node joined swarm .*self=true/);
    const member = procs.track(spawnRole("worker.ts", [...args, "--swarm.http.listen", "127.0.0.1:0"], { env: ECHO_ENV }));
    await member.waitForLine(new RegExp(`Node joined swarm node=${selfId(peer)}`));
    const url = (await member.waitForLine(/HTTP listening url=/)).match(/url=(\S+)/)![1]!;
    const nc = await connect({ servers: suite.nats.url });
    try {
      const names = swarmNames(hid);
      // Valid heartbeats from 500 ids nobody runs.
      for (let i = 0; i < 500; i++) {
        const info: NodeInfo = {
          v: 1,
          node: `spoof-${i}`,
          sid: "s-spoof",
          role: "worker",
          capabilities: ["general"],
          max_concurrent: 1,
          running: 0,
          status: "online",
          version: "0.0.0",
          started_at: Date.now(),
          heartbeat_interval: HEARTBEAT_MS,
        };
        nc.publish(names.heartbeat(info.node), encode(info));
      }
      await nc.flush();
      const metric = (text: string, line: RegExp) => Number(line.exec(text)?.[1] ?? Number.NaN);
      await waitFor("the member to drop what does not fit", async () => {
        const text = await (await fetch(`${url}/metrics`)).text();
        return metric(text, /^picoclaw_bad_messages_total (\d+)$/m) >= 450;
      });
      const text = await (await fetch(`${url}/metrics`)).text();
      const known = [...text.matchAll(/^picoclaw_nodes\{status="\w+"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
      expect(known).toBeLessThanOrEqual(51); // 50 peers and itself
      // The real peer is still known (it was there before the flood); so is the flood's bound in the dashboard.
      const snap = await snapshot(hid, ["--swarm.max_nodes", "50"]);
      expect(snap.nodes.length).toBeLessThanOrEqual(50);
      // The stored heartbeats are bounded the same way (the NODES stream keeps at most swarm.max_nodes).
      const state = await (await nc.jetstreamManager()).streams.info(names.streams.nodes);
      expect(state.state.messages).toBeLessThanOrEqual(50);
      expect(peer.proc.exitCode).toBeNull();
    } finally {
      await nc.close();
      await procs.killAll();
    }
  });

  test("the queued-sub-tasks metric is bounded: 300 made-up queue consumers become at most 100 series, the rest as (other)", async () => {
    const hid = "leak5";
    const args = ["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST, "--swarm.http.listen", "127.0.0.1:0"];
    const member = procs.track(spawnRole("worker.ts", args, { env: ECHO_ENV }));
    const url = (await member.waitForLine(/HTTP listening url=/)).match(/url=(\S+)/)![1]!;
    await member.waitForLine(/Node joined swarm .*self=true/);
    const nc = await connect({ servers: suite.nats.url });
    try {
      const names = swarmNames(hid);
      const jsm = await nc.jetstreamManager();
      // Whoever may create consumers on TASKS can name them like capability queues.
      for (let i = 0; i < 300; i++) {
        await jsm.consumers.add(names.streams.tasks, {
          durable_name: `q_junk${i}_0`,
          filter_subject: names.taskQueue(`junk${i}`, 0),
          ack_policy: AckPolicy.Explicit,
        });
      }
      const series = async () =>
        (await (await fetch(`${url}/metrics`)).text()).split("\n").filter((l) => l.startsWith("picoclaw_subtasks_queued{"));
      const lines = await waitFor(
        "the gauge to read the new consumers",
        async () => {
          const l = await series();
          return l.some((x) => x.includes('capability="(other)"')) ? l : undefined;
        },
        15_000,
        200,
      );
      expect(lines.length).toBeLessThanOrEqual(100);
      const snap = await snapshot(hid);
      expect(snap.queues.length).toBeLessThanOrEqual(100);
    } finally {
      await nc.close();
      await procs.killAll();
    }
  });

  test("consumers follow a worker's changed config at start-up (ack wait, max deliveries), streams the coordinator's (retention)", async () => {
    const hid = "leak3";
    const base = ["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST];
    const first = procs.track(spawnRole("worker.ts", base, { env: ECHO_ENV }));
    await first.waitForLine(/Node joined swarm .*self=true/);
    first.signal("SIGTERM");
    expect(await first.exited()).toBe(0);
    const second = procs.track(
      spawnRole(
        "worker.ts",
        [...base, "--swarm.tasks.ack_wait", "12s", "--swarm.tasks.max_deliver", "7", "--swarm.tasks.retention", "4h"],
        { env: ECHO_ENV },
      ),
    );
    await second.waitForLine(/Node joined swarm .*self=true/);
    expect(second.output()).toContain("Consumer settings follow the config");
    // Stream settings are the coordinator's: a worker leaves them alone, a coordinator applies its own.
    expect(second.output()).not.toContain("Stream settings follow the config");
    const coordinator = procs.track(spawnRole("coordinator.ts", [...base, "--swarm.tasks.retention", "2h"], { env: ECHO_ENV }));
    await coordinator.waitForLine(/Node joined swarm .*self=true/);
    expect(coordinator.output()).toContain("Stream settings follow the config");
    const nc = await connect({ servers: suite.nats.url });
    try {
      const names = swarmNames(hid);
      const jsm = await nc.jetstreamManager();
      const queue = await jsm.consumers.info(names.streams.tasks, names.consumers.queue("general", 1));
      expect(queue.config.ack_wait).toBe(12_000_000_000);
      expect(queue.config.max_deliver).toBe(7);
      expect((await jsm.streams.info(names.streams.tasks)).config.max_age).toBe(2 * 3_600_000_000_000);
    } finally {
      await nc.close();
    }
    await procs.killAll();
  });

  test("a stream the server cannot bring in line (someone made it with other retention) stops start-up naming it", async () => {
    const hid = "leak3b";
    const nc = await connect({ servers: suite.nats.url });
    try {
      const names = swarmNames(hid);
      await (await nc.jetstreamManager()).streams.add({ name: names.streams.tasks, subjects: names.streamSubjects.tasks });
    } finally {
      await nc.close();
    }
    const refused = await runRole("worker.ts", ["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST], { env: ECHO_ENV });
    expect(refused.code).toBe(2);
    expect(refused.output).toContain(
      `invalid config stream ${swarmNames(hid).streams.tasks} from the NATS server: retention workqueue (it has limits`,
    );
  });
});

describe("a dashboard started after a node died", () => {
  test("shows it offline within node_timeout + heartbeat_interval of the kill, and forgets it later", async () => {
    const hid = "leak4";
    const args = ["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST];
    const keep = procs.track(spawnRole("worker.ts", args, { env: ECHO_ENV }));
    const victim = procs.track(spawnRole("worker.ts", args, { env: ECHO_ENV }));
    for (const p of [keep, victim]) await p.waitForLine(/Node joined swarm .*self=true/);
    const id = selfId(victim);
    victim.signal("SIGKILL");
    const killedAt = Date.now();
    // Fresh one-shot dashboards, one after another, until one shows the victim offline: at the latest
    // the first one started once node_timeout + heartbeat_interval (and slack for a loaded box) passed.
    let shown: DashboardSnapshot | undefined;
    let late: string | undefined;
    await waitFor(
      "a fresh dashboard showing the killed node offline",
      async () => {
        const startedAt = Date.now();
        const snap = await snapshot(hid);
        const status = snap.nodes.find((n) => n.node === id)?.status;
        if (status === "offline") {
          shown = snap;
          return true;
        }
        if (startedAt - killedAt > NODE_TIMEOUT_MS + HEARTBEAT_MS + 500) {
          late ??= `a dashboard started ${startedAt - killedAt} ms after the kill showed it ${status ?? "not at all"}`;
        }
        return undefined;
      },
      20_000,
      0,
    );
    expect(late).toBeUndefined();
    expect(shown!.stats.nodes).toMatchObject({ total: 2, online: 1, offline: 1 });
    // Forgotten after 5 × node_timeout: a dashboard started then lists only the node that is alive.
    await waitFor("the killed node forgotten", async () => !(await snapshot(hid)).nodes.some((n) => n.node === id), 30_000, 250);
    await procs.killAll();
  });

  test("a node that left gracefully is not shown at all, not as offline", async () => {
    const hid = "leak5";
    const args = ["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST];
    const leaver = procs.track(spawnRole("worker.ts", args, { env: ECHO_ENV }));
    await leaver.waitForLine(/Node joined swarm .*self=true/);
    leaver.signal("SIGTERM");
    expect(await leaver.exited()).toBe(0);
    const snap = await snapshot(hid);
    expect(snap.nodes).toEqual([]);
    await procs.killAll();
  });
});
