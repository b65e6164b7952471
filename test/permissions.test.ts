// H-id isolation enforced by the server: nats-server runs a test copy of docs/nats-server.conf (users alpha
// and beta, each allowed only its own swarm's subjects, inboxes, streams and KV buckets). A coordinator, a
// worker and `picoclaw submit` of H-id alpha, all as user alpha, answer a request end to end; as alpha,
// H-id beta's subjects, inboxes and KV bucket are refused with a permissions violation.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, Events, type NatsConnection } from "nats";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, ROOT, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { selfId } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const ALPHA_PASSWORD = "alpha-test-password";
const BETA_PASSWORD = "beta-test-password";

/**
 * docs/nats-server.conf as shipped, minus what the test harness sets itself (port and JetStream store come
 * from startNatsServer's flags), with the passwords it reads from the environment filled in.
 */
function testConfig(): string {
  const doc = readFileSync(join(ROOT, "docs", "nats-server.conf"), "utf8");
  const conf = doc
    .replace(/^port: .*$/m, "")
    .replace(/^jetstream \{[\s\S]*?^\}/m, "")
    .replace("$ALPHA_PASSWORD", JSON.stringify(ALPHA_PASSWORD))
    .replace("$BETA_PASSWORD", JSON.stringify(BETA_PASSWORD));
  for (const gone of ["port: 4222", "/var/lib/nats", "$ALPHA_PASSWORD", "$BETA_PASSWORD"]) {
    if (conf.includes(gone)) throw new Error(`docs/nats-server.conf changed shape: test copy still has ${gone}`);
  }
  return conf;
}

let server: NatsServer;
const procs = reaper();
const conns: NatsConnection[] = [];
beforeAll(async () => {
  server = await startNatsServer({ config: testConfig() });
});
afterAll(async () => {
  await procs.killAll();
  await Promise.all(conns.map((nc) => nc.close().catch(() => {})));
  await server.stop();
});

const asAlpha = () => [
  "--swarm.nats.urls",
  server.url,
  "--swarm.nats.user",
  "alpha",
  "--swarm.nats.password",
  ALPHA_PASSWORD,
  "--swarm.hid",
  "alpha",
];

/** A nats.js client as one H-id user, with that H-id's inbox prefix (as picoclaw itself connects). */
async function client(user: "alpha" | "beta", password: string): Promise<NatsConnection> {
  const nc = await connect({ servers: server.url, user, pass: password, inboxPrefix: `_INBOX_${user}`, reconnect: false });
  conns.push(nc);
  return nc;
}

/** Resolves with the error a subscription is closed with (bounded). */
async function subscribeError(nc: NatsConnection, subject: string): Promise<string> {
  let error: string | undefined;
  nc.subscribe(subject, { callback: (err) => (error ??= err ? `${err.code} ${err.message}` : undefined) });
  await nc.flush();
  return waitFor(`the server to refuse a subscription to ${subject}`, () => error, 5_000);
}

describe("per-H-id NATS permissions (docs/nats-server.conf)", () => {
  test("coordinator, worker and submit of H-id alpha, all as user alpha, answer a request end to end", async () => {
    const env = { PICOCLAW_LLM_PROVIDER: "echo" };
    const home = tempHome();
    const coordinator = procs.track(spawnRole("coordinator.ts", [...asAlpha(), ...FAST], { env, home }));
    const worker = procs.track(spawnRole("worker.ts", [...asAlpha(), ...FAST], { env, home }));
    await coordinator.waitForLine(/Node joined swarm .*self=true/, 20_000);
    await worker.waitForLine(/Node joined swarm .*self=true/, 20_000);
    await coordinator.waitForLine(new RegExp(`Node joined swarm node=${selfId(worker)}\\b`), 10_000);

    const r = await runRole("picoclaw.ts", ["submit", ...asAlpha(), "Summarise: perm-marker-4417"], { env, timeoutMs: 40_000 });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("[echo] Summarise: perm-marker-4417");
    await worker.waitForLine(/Task completed /, 10_000);

    // A core request and its replies, also inside alpha's inboxes.
    const ping = await runRole("picoclaw.ts", ["ping", selfId(worker), ...asAlpha()]);
    expect(ping.code).toBe(0);
    expect(ping.output).toContain(`${selfId(worker)}: pong`);

    for (const p of [coordinator, worker]) p.signal("SIGTERM");
    expect(await coordinator.exited(20_000)).toBe(0);
    expect(await worker.exited(20_000)).toBe(0);
    for (const out of [coordinator.output(), worker.output(), r.output, ping.output]) {
      expect(out).not.toMatch(/permissions violation/i);
    }
  });

  test("as user alpha, H-id beta's subjects, inboxes and KV bucket are refused by the server", async () => {
    // Beta's swarm has data: its tasks bucket with a record in it.
    const beta = await client("beta", BETA_PASSWORD);
    const betaKv = await beta.jetstream().views.kv("picoclaw_beta_tasks", { history: 1 });
    await betaKv.put("request.r-beta", "beta's request record");

    const alpha = await client("alpha", ALPHA_PASSWORD);
    const statusErrors: string[] = [];
    void (async () => {
      for await (const s of alpha.status()) if (s.type === Events.Error) statusErrors.push(String(s.data));
    })();

    // Publish: a plain publish is refused asynchronously (the server's -ERR arrives as a status error);
    // a JetStream publish is refused with the server's message.
    alpha.publish("picoclaw.beta.request.submit", new TextEncoder().encode("{}"));
    await alpha.flush();
    await waitFor(
      "a permissions-violation status after publishing to picoclaw.beta.request.submit",
      () => statusErrors.includes("PERMISSIONS_VIOLATION"),
      5_000,
    );
    const jsPub = await alpha
      .jetstream()
      .publish("picoclaw.beta.request.submit", new TextEncoder().encode("{}"), { timeout: 5_000 })
      .then(
        () => "accepted",
        (err: Error) => err.message,
      );
    expect(jsPub).toContain('Permissions Violation for Publish to "picoclaw.beta.request.submit"');

    // Subscribe: beta's subjects, beta's inboxes, and the shared inbox space are all refused.
    expect(await subscribeError(alpha, "picoclaw.beta.>")).toMatch(
      /^PERMISSIONS_VIOLATION .*Permissions Violation for Subscription to "picoclaw\.beta\.>"/,
    );
    expect(await subscribeError(alpha, "_INBOX_beta.>")).toMatch(
      /^PERMISSIONS_VIOLATION .*Permissions Violation for Subscription to "_INBOX_beta\.>"/,
    );
    expect(await subscribeError(alpha, "_INBOX.>")).toMatch(
      /^PERMISSIONS_VIOLATION .*Permissions Violation for Subscription to "_INBOX\.>"/,
    );

    // KV: neither opening beta's bucket nor reading a key from it is allowed.
    const open = await alpha
      .jetstream()
      .views.kv("picoclaw_beta_tasks")
      .then(
        () => "opened",
        (err: Error) => err.message,
      );
    expect(open).toContain('Permissions Violation for Publish to "$JS.API.STREAM.INFO.KV_picoclaw_beta_tasks"');
    const bound = await alpha.jetstream().views.kv("picoclaw_beta_tasks", { bindOnly: true });
    const read = await bound.get("request.r-beta").then(
      (e) => `read: ${e?.string()}`,
      (err: Error) => err.message,
    );
    expect(read).toMatch(/Permissions Violation for Publish to "\$JS\.API\.(STREAM\.MSG|DIRECT)\.GET\.KV_picoclaw_beta_tasks/);

    // The refusals are specific: alpha's own bucket works on the same connection, which stays up.
    const own = await alpha.jetstream().views.kv("picoclaw_alpha_tasks", { history: 1 });
    await own.put("request.r-alpha", "alpha's record");
    expect((await own.get("request.r-alpha"))?.string()).toBe("alpha's record");
    expect(alpha.isClosed()).toBe(false);
  });
});
