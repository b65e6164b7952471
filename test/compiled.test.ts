// The compiled executables behave like the scripts: build them, run a swarm of binaries end to end.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DashboardSnapshot } from "../lib/snapshot.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, ROOT, reaper, runRole, spawnRole } from "./helpers/role-process.ts";

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
  for (const name of ["picoclaw", "picoclaw-coordinator", "picoclaw-worker", "picoclaw-specialist", "picoclaw-dashboard"]) {
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
