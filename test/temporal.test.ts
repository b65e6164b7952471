// Temporal is optional: unreachable -> the guide's warning once and the node works; empty address -> silent.
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { freePort } from "../lib/embedded-nats.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole } from "./helpers/role-process.ts";

let nats: NatsServer;
const procs = reaper();
beforeAll(async () => {
  nats = await startNatsServer();
});
afterEach(() => procs.killAll());
afterAll(() => nats.stop());

const WARNING = /Temporal connection failed \(workflows disabled\)/;

test("unreachable Temporal: warning logged once, the node still joins, the dashboard shows it disabled", async () => {
  const address = `127.0.0.1:${await freePort()}`;
  const args = ["--swarm.nats.urls", nats.url, "--swarm.hid", "t1", "--swarm.temporal.address", address, ...FAST];
  const w = procs.track(spawnRole("worker.ts", args));
  await w.waitForLine(WARNING);
  await w.waitForLine(/Node joined swarm .*self=true/);
  const board = await runRole("dashboard.ts", ["--once", ...args]);
  expect(board.code).toBe(0);
  expect(board.stdout).toContain(`Temporal: ✗ No  ${address} (workflows disabled)`);
  w.signal("SIGTERM");
  expect(await w.exited()).toBe(0);
  expect(w.countLines(WARNING)).toBe(1);
});

test('--swarm.temporal.address="" disables Temporal silently', async () => {
  const w = procs.track(spawnRole("worker.ts", ["--swarm.nats.urls", nats.url, "--swarm.hid", "t2", "--swarm.temporal.address=", ...FAST]));
  await w.waitForLine(/Node joined swarm .*self=true/);
  w.signal("SIGTERM");
  expect(await w.exited()).toBe(0);
  expect(w.countLines(/Temporal/)).toBe(0);
});
