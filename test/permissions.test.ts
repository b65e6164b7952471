// H-id isolation enforced by the server: nats-server runs a test copy of docs/nats-server.conf (users per
// H-id and role, each allowed only its own swarm's subjects, inboxes, streams and KV buckets). As H-id
// alpha's coordinator, H-id beta's subjects, inboxes and KV bucket are refused with a permissions
// violation. What each role may do inside its own H-id: test/role-permissions.test.ts.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, Events, type NatsConnection } from "nats";
import { passwordOf, type RoleUser, shippedConfigForTests } from "./helpers/nats-conf.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { waitFor } from "./helpers/wait.ts";

let server: NatsServer;
const conns: NatsConnection[] = [];
beforeAll(async () => {
  server = await startNatsServer({ config: shippedConfigForTests() });
});
afterAll(async () => {
  await Promise.all(conns.map((nc) => nc.close().catch(() => {})));
  await server.stop();
});

/** A nats.js client as one H-id user, with that H-id's inbox prefix (as picoclaw itself connects). */
async function client(hid: "alpha" | "beta", role: RoleUser): Promise<NatsConnection> {
  const nc = await connect({
    servers: server.url,
    user: `${hid}-${role}`,
    pass: passwordOf(hid, role),
    inboxPrefix: `_INBOX_${hid}`,
    reconnect: false,
  });
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
  test("as H-id alpha's coordinator (its broadest user), H-id beta's subjects, inboxes and KV bucket are refused by the server", async () => {
    // Beta's swarm has data: its tasks bucket with a record in it.
    const beta = await client("beta", "coordinator");
    const betaKv = await beta.jetstream().views.kv("picoclaw_beta_tasks", { history: 1 });
    await betaKv.put("request.r-beta", "beta's request record");

    const alpha = await client("alpha", "coordinator");
    const statusErrors: string[] = [];
    void (async () => {
      for await (const s of alpha.status()) if (s.type === Events.Error) statusErrors.push(String(s.data));
    })();

    // Publish: a plain publish is refused asynchronously (the server's -ERR arrives as a status error);
    // a JetStream publish is refused with the server's message.
    alpha.publish("picoclaw.beta.task.queue.general.1", new TextEncoder().encode("{}"));
    await alpha.flush();
    await waitFor(
      "a permissions-violation status after publishing to picoclaw.beta.task.queue.general.1",
      () => statusErrors.includes("PERMISSIONS_VIOLATION"),
      5_000,
    );
    const jsPub = await alpha
      .jetstream()
      .publish("picoclaw.beta.task.queue.general.1", new TextEncoder().encode("{}"), { timeout: 5_000 })
      .then(
        () => "accepted",
        (err: Error) => err.message,
      );
    expect(jsPub).toContain('Permissions Violation for Publish to "picoclaw.beta.task.queue.general.1"');

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
