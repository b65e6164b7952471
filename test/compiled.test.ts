// The compiled executables behave like the scripts: build them, run a swarm of binaries end to end.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DashboardSnapshot } from "../roles/dashboard/snapshot.ts";
import { guideConfigHome } from "./helpers/guide-config.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, ROOT, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { startTemporalServer } from "./helpers/temporal-server.ts";
import { waitFor } from "./helpers/wait.ts";

let nats: NatsServer;
const procs = reaper();
const dist = (name: string) => join(ROOT, "dist", name);

beforeAll(async () => {
  const build = Bun.spawn(["bun", "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const code = await build.exited;
  if (code !== 0) throw new Error(`bun run build failed:\n${await new Response(build.stderr).text()}`);
  nats = await startNatsServer();
}, 180_000);
afterAll(async () => {
  await procs.killAll();
  await nats?.stop();
});

test("bun run build produces one executable per role and the all-in-one", () => {
  for (const name of [
    "picoclaw",
    "picoclaw-coordinator",
    "picoclaw-worker",
    "picoclaw-specialist",
    "picoclaw-dashboard",
    "picoclaw-gateway",
  ]) {
    expect(existsSync(dist(name))).toBe(true);
  }
});

test("compiled picoclaw runs the guide's commands: coordinator and worker join, dashboard --json sees both", async () => {
  const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", "bin1", ...FAST];
  const coord = procs.track(
    spawnRole("picoclaw", ["--swarm.enabled", "--swarm.role", "coordinator", ...args], { binary: dist("picoclaw") }),
  );
  const worker = procs.track(
    spawnRole("picoclaw-worker", ["--swarm.capabilities", "code,research", ...args], { binary: dist("picoclaw-worker") }),
  );
  await coord.waitForLine(/Node joined swarm .*role=worker capabilities=code,research/);
  await worker.waitForLine(/Node joined swarm .*role=coordinator/);
  const r = await runRole("picoclaw-dashboard", ["--json", ...args], { binary: dist("picoclaw-dashboard") });
  expect(r.code).toBe(0);
  const snap = JSON.parse(r.stdout) as DashboardSnapshot;
  expect(snap.nodes.map((n) => n.role).sort()).toEqual(["coordinator", "worker"]);
  worker.signal("SIGTERM");
  expect(await worker.exited()).toBe(0);
  await coord.waitForLine(/Node left swarm .*role=worker reason=graceful/);
});

test("compiled picoclaw config and --version work from any directory", async () => {
  const v = await runRole("picoclaw", ["--version"], { binary: dist("picoclaw"), cwd: tmpdir() });
  expect(v.code).toBe(0);
  expect(v.stdout).toMatch(/^picoclaw \d+\.\d+\.\d+/);
  const c = await runRole("picoclaw", ["config", "--swarm.role", "specialist"], { binary: dist("picoclaw"), cwd: tmpdir() });
  expect(c.code).toBe(0);
  expect(c.stdout).toContain('swarm.role = "specialist"  # flag --swarm.role');
});

/** Text that only one part of the code holds: a role's executable must not contain another role's. */
const MARKERS = {
  planner: "You are the planner of PicoClaw Swarm",
  synthesis: "You merge the results of several specialist agents",
  frame: "PicoClaw Swarm Status Dashboard",
  executor: "Do only your part",
  submit: "no coordinator is online in swarm",
  temporal: "the workflow bundler is not in this executable",
  web: "live, with their sub-task DAG",
  gateway: "swarm.gateway.max_pending is",
} as const;

test("a role's executable contains only its role: no planner, synthesis, dashboard or submit in a worker; no executor in the dashboard", async () => {
  const holds = async (name: string) => {
    const text = new TextDecoder("latin1").decode(await Bun.file(dist(name)).arrayBuffer());
    return Object.fromEntries(Object.entries(MARKERS).map(([k, marker]) => [k, text.includes(marker)]));
  };
  // The all-in-one holds every marker: were one reworded, this fails instead of passing vacuously.
  const none = {
    planner: false,
    synthesis: false,
    frame: false,
    executor: false,
    submit: false,
    temporal: false,
    web: false,
    gateway: false,
  };
  expect(await holds("picoclaw")).toEqual({
    planner: true,
    synthesis: true,
    frame: true,
    executor: true,
    submit: true,
    temporal: true,
    web: true,
    gateway: true,
  });
  const workerOnly = { ...none, executor: true };
  expect(await holds("picoclaw-worker")).toEqual(workerOnly);
  expect(await holds("picoclaw-specialist")).toEqual(workerOnly);
  expect(await holds("picoclaw-coordinator")).toEqual({ ...none, planner: true, synthesis: true, temporal: true });
  expect(await holds("picoclaw-dashboard")).toEqual({ ...none, frame: true, web: true });
  expect(await holds("picoclaw-gateway")).toEqual({ ...none, gateway: true });
});

test("dist/picoclaw-dashboard serves the web dashboard from inside the executable, run from another directory", async () => {
  const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", "bin-web", ...FAST, "--swarm.http.listen", "127.0.0.1:0"];
  const board = procs.track(spawnRole("picoclaw-dashboard", args, { binary: dist("picoclaw-dashboard"), cwd: tmpdir() }));
  const url = /HTTP listening url=(\S+)/.exec(await board.waitForLine(/HTTP listening url=/))![1]!;
  const page = await (await fetch(url)).text();
  expect(page).toContain("<title>PicoClaw Swarm</title>");
  expect(page).toContain('new EventSource("events")');
  expect(page).toContain(".req-head {");
  const events = await fetch(`${url}/events`);
  expect(events.headers.get("content-type")).toBe("text/event-stream");
  const first = await events.body!.getReader().read();
  expect(JSON.parse(new TextDecoder().decode(first.value).split("data: ")[1]!).snapshot.hid).toBe("bin-web");
  board.signal("SIGTERM");
  expect(await board.exited()).toBe(0);
});

test("dist/picoclaw-dashboard with the guide's config file (role: coordinator) observes and never joins", async () => {
  const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", "bin-observer", ...FAST];
  const member = procs.track(spawnRole("picoclaw-worker", args, { binary: dist("picoclaw-worker"), home: tempHome() }));
  await member.waitForLine(/Node joined swarm .*self=true/);
  const r = await runRole("picoclaw-dashboard", ["--json", ...args], {
    binary: dist("picoclaw-dashboard"),
    home: guideConfigHome("coordinator"),
  });
  expect(r.code).toBe(0);
  const snap = JSON.parse(r.stdout) as DashboardSnapshot;
  expect(snap.this_node.role).toBe("dashboard");
  expect(snap.nodes.map((n) => n.role)).toEqual(["worker"]);
  expect(member.lines.filter((l) => l.includes("Node joined swarm") && !l.includes("self=true"))).toEqual([]);
});

test("the compiled coordinator carries the Temporal worker: against a dev server, with node_modules hidden, requests run as workflows", async () => {
  const temporal = await startTemporalServer();
  try {
    const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", "bin-temporal", ...FAST, "--swarm.temporal.address", temporal.address];
    // A mount namespace with an empty node_modules: what the executable needs must be inside it.
    const hidden = process.getuid?.() === 0;
    if (!hidden) console.log("compiled Temporal test: not root, so node_modules stays visible to the executable");
    const wrap = hidden
      ? [
          "unshare",
          "--mount",
          "--propagation",
          "private",
          "--",
          "sh",
          "-c",
          'mount -t tmpfs none "$0" && exec "$@"',
          join(ROOT, "node_modules"),
        ]
      : [];
    const coord = procs.track(
      spawnRole("picoclaw-coordinator", args, {
        binary: dist("picoclaw-coordinator"),
        wrap,
        cwd: tmpdir(),
        env: { PICOCLAW_LLM_PROVIDER: "echo" },
      }),
    );
    const worker = procs.track(
      spawnRole("picoclaw-worker", args, { binary: dist("picoclaw-worker"), env: { PICOCLAW_LLM_PROVIDER: "echo" } }),
    );
    await coord.waitForLine(/Temporal connected: requests run as workflows/, 30_000);
    await worker.waitForLine(/Node joined swarm .*role=coordinator/);
    const r = await runRole("picoclaw", ["submit", ...args, "Review this change: compiled"], {
      binary: dist("picoclaw"),
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("## security review — completed");
    expect(coord.output()).toMatch(/Request started as a workflow request=r-/);
    // The coordinator logs it after the answer is out, which is also what ends submit: it may come a moment later.
    await coord.waitForLine(/Request answered .*workflow=true/, 10_000);
    // The workflow closes after its answer activity returns, and the dev server's list follows in the background.
    await waitFor(
      "the workflow listed as Completed",
      async () =>
        /Completed\s+r-\w+\s+requestWorkflow/.test(
          (await temporal.cli(["workflow", "list", "--query", "TaskQueue = 'picoclaw-swarm'"])).out,
        ),
      20_000,
      250,
    );
  } finally {
    await procs.killAll();
    await temporal.stop();
  }
}, 120_000);
