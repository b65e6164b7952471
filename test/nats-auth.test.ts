// NATS authentication a node can use: token, user/password (flags or inside the URL); a wrong
// credential fails start-up naming the method and the server's answer, and never prints the secret.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startNatsServer, type NatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole } from "./helpers/role-process.ts";

let tokenServer: NatsServer;
let userServer: NatsServer;
const procs = reaper();
const TOKEN = "s3cret-t0ken-value";
const PASSWORD = "hunter2-password";
beforeAll(async () => {
  [tokenServer, userServer] = await Promise.all([
    startNatsServer({ config: `authorization { token: "${TOKEN}" }\n` }),
    startNatsServer({ config: `authorization { user: swarm, password: "${PASSWORD}" }\n` }),
  ]);
});
afterAll(async () => {
  await procs.killAll();
  await Promise.all([tokenServer.stop(), userServer.stop()]);
});

async function joins(args: string[], env: Record<string, string> = {}) {
  const w = procs.track(spawnRole("worker.ts", [...args, "--swarm.hid", "auth1", ...FAST], { env }));
  await w.waitForLine(/Node joined swarm .*self=true/);
  w.signal("SIGTERM");
  expect(await w.exited()).toBe(0);
  return w.output();
}

describe("NATS authentication", () => {
  test("token (env) connects; the token never appears in output or `picoclaw config`", async () => {
    const out = await joins(["--swarm.nats.urls", tokenServer.url], { PICOCLAW_SWARM_NATS_TOKEN: TOKEN });
    expect(out).not.toContain(TOKEN);
    const cfg = await runRole("picoclaw.ts", ["config"], { env: { PICOCLAW_SWARM_NATS_TOKEN: TOKEN } });
    expect(cfg.output).toContain('swarm.nats.token = "***"  # env PICOCLAW_SWARM_NATS_TOKEN');
    expect(cfg.output).not.toContain(TOKEN);
  });

  test("user and password, as flags and inside the URL", async () => {
    await joins(["--swarm.nats.urls", userServer.url, "--swarm.nats.user", "swarm", "--swarm.nats.password", PASSWORD]);
    const inUrl = userServer.url.replace("nats://", `nats://swarm:${PASSWORD}@`);
    const out = await joins(["--swarm.nats.urls", inUrl]);
    expect(out).not.toContain(PASSWORD);
  });

  test("a wrong or missing credential stops start-up naming the method and the server's answer", async () => {
    const wrong = await runRole("worker.ts", ["--swarm.nats.urls", tokenServer.url, "--swarm.hid", "auth1"], { env: { PICOCLAW_SWARM_NATS_TOKEN: "wrong-token" } });
    expect(wrong.code).toBe(1);
    expect(wrong.output).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+ \(auth: token\): server refused the credentials/);
    expect(wrong.output).not.toContain("wrong-token");
    const none = await runRole("worker.ts", ["--swarm.nats.urls", userServer.url, "--swarm.hid", "auth1"]);
    expect(none.code).toBe(1);
    expect(none.output).toMatch(/\(auth: none\): server refused the credentials/);
    const badPass = await runRole("worker.ts", ["--swarm.nats.urls", userServer.url, "--swarm.nats.user", "swarm", "--swarm.nats.password", "nope-nope", "--swarm.hid", "auth1"]);
    expect(badPass.code).toBe(1);
    expect(badPass.output).toContain("(auth: user swarm)");
    expect(badPass.output).not.toContain("nope-nope");
  });
});
