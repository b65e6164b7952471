// `picoclaw --swarm.check-nats` against a good server, a dead port, and a server without JetStream.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { freePort } from "../lib/embedded-nats.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { runRole } from "./helpers/role-process.ts";

let js: NatsServer;
let plain: NatsServer;
beforeAll(async () => {
  [js, plain] = await Promise.all([startNatsServer(), startNatsServer({ jetstream: false })]);
});
afterAll(async () => {
  await Promise.all([js.stop(), plain.stop()]);
});

describe("--swarm.check-nats", () => {
  test("a running JetStream server: reachable, version, JetStream enabled, round trip; exit 0", async () => {
    const r = await runRole("picoclaw.ts", ["--swarm.check-nats", "--swarm.nats.urls", js.url]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`✓ ${js.url}  reachable  server 2\\.\\d+\\.\\d+  JetStream ✓ enabled  rtt [\\d.]+ms`));
    expect(r.stdout).toContain("all 1 NATS URL(s) OK");
  });

  test("a dead port: exit 1 naming the URL and 'connection refused'", async () => {
    const dead = `nats://127.0.0.1:${await freePort()}`;
    const r = await runRole("picoclaw.ts", ["--swarm.check-nats", "--swarm.nats.urls", dead]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`✗ ${dead}  unreachable: connection refused`);
  });

  test("a server without JetStream: exit 1 saying to start it with -js", async () => {
    const r = await runRole("picoclaw.ts", ["--swarm.check-nats", "--swarm.nats.urls", plain.url]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("JetStream ✗ disabled");
    expect(r.stdout).toContain("start nats-server with -js");
  });

  test("several URLs are each reported; one bad one fails the check", async () => {
    const dead = `nats://127.0.0.1:${await freePort()}`;
    const r = await runRole("picoclaw.ts", ["--swarm.check-nats", "--swarm.nats.urls", `${js.url},${dead}`]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`✓ ${js.url}`);
    expect(r.stdout).toContain(`✗ ${dead}`);
    expect(r.stdout).toContain("1 of 2 NATS URL(s) not usable");
  });
});
