// Pulling sub-tasks and requests in batches (lib/pull.ts) against a real nats-server: one pull hands
// out what is waiting up to the limit, answers at once when nothing is, and leaves no subscription
// behind (a worker pulls thousands of times a day).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { AckPolicy, connect, type NatsConnection, RetentionPolicy } from "nats";
import { pullAvailable } from "../lib/pull.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";

let nats: NatsServer;
let nc: NatsConnection;
const from = { stream: "PULLTEST", durable: "d", timeoutMs: 5_000 };

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url, inboxPrefix: "_INBOX_pulltest" });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: from.stream, subjects: ["pulltest.>"], retention: RetentionPolicy.Workqueue });
  await jsm.consumers.add(from.stream, { durable_name: from.durable, ack_policy: AckPolicy.Explicit, filter_subject: "pulltest.a" });
});
afterAll(async () => {
  await nc.close();
  await nats.stop();
});

const subscriptions = () => (nc as unknown as { protocol: { subscriptions: { size(): number } } }).protocol.subscriptions.size();

async function publish(n: number) {
  const js = nc.jetstream();
  for (let i = 0; i < n; i++) await js.publish("pulltest.a", new TextEncoder().encode(`m${i}`));
}

test("a pull returns what is waiting, up to the limit, in order; an empty queue answers with nothing", async () => {
  const before = subscriptions();
  expect(await pullAvailable(nc, { ...from, max: 8, waitMs: 0 })).toEqual([]);

  await publish(3);
  const partial = await pullAvailable(nc, { ...from, max: 8, waitMs: 0 });
  expect(partial.map((m) => new TextDecoder().decode(m.data))).toEqual(["m0", "m1", "m2"]);
  for (const m of partial) m.ack();

  await publish(12);
  const full = await pullAvailable(nc, { ...from, max: 8, waitMs: 0 });
  expect(full).toHaveLength(8);
  const rest = await pullAvailable(nc, { ...from, max: 8, waitMs: 0 });
  expect(rest).toHaveLength(4);
  for (const m of [...full, ...rest]) m.ack();

  // Every pull closed its reply subscription, whether it got a full batch, part of one or nothing.
  expect(subscriptions()).toBe(before);
});

test("a waiting pull takes a message published after it was sent", async () => {
  const pulling = pullAvailable(nc, { ...from, max: 8, waitMs: 2_000 });
  await nc.flush();
  await publish(1);
  const got = await pulling;
  expect(got).toHaveLength(1);
  got[0]!.ack();
});
