// The worker's scheduler (roles/worker/scheduler.ts) against a real nats-server: it pulls only while a
// slot is free, highest priority first, shares a burst with its peers, and hands back on stop. The
// runner is replaced by a function that holds each sub-task until the test releases it.
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { connect, type JsMsg, type NatsConnection } from "nats";
import { loadConfig } from "../lib/config.ts";
import { ensureConsumer, ensureStreams } from "../lib/streams.ts";
import { type SwarmNames, swarmNames } from "../lib/subjects.ts";
import { type Queue, type Scheduler, startScheduler } from "../roles/worker/scheduler.ts";
import { durableInactivitySafe } from "../roles/worker/server-features.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

let nats: NatsServer;
let nc: NatsConnection;
const running: Scheduler[] = [];
beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});
afterAll(async () => {
  await nc.close();
  await nats.stop();
});

/** A fresh swarm (H-id) with queues for capability `code` at priorities 3 and 0. */
async function swarm(hid: string): Promise<{ names: SwarmNames; queues: Queue[] }> {
  const cfg = loadConfig({ flags: {}, env: {}, home: tempHome() }).config;
  const names = swarmNames(hid);
  const jsm = await ensureStreams(nc, names, cfg);
  const queues: Queue[] = [3, 0].map((p) => ({
    durable: names.consumers.queue("code", p),
    subject: names.taskQueue("code", p),
    capability: "code",
  }));
  for (const q of queues) await ensureConsumer(jsm, names.streams.tasks, q.durable, q.subject, { ackWait: 30_000, maxDeliver: 5 });
  return { names, queues };
}

/** A scheduler whose runs are held until released; `started` lists the payloads in start order. */
function held(names: SwarmNames, queues: Queue[], maxConcurrent: number, peers = 0) {
  const started: string[] = [];
  const waiting: { msg: JsMsg; release: () => void }[] = [];
  let active = 0;
  let maxActive = 0;
  const scheduler = startScheduler({
    nc,
    stream: names.streams.tasks,
    queues,
    doorbells: [names.taskQueueAnyPriority("code")],
    maxConcurrent,
    peersWith: () => peers,
    onError: (err) => {
      throw err;
    },
    recreate: async (q) =>
      ensureConsumer(await nc.jetstreamManager(), names.streams.tasks, q.durable, q.subject, { ackWait: 30_000, maxDeliver: 5 }),
    run: (msg) =>
      new Promise<void>((resolve) => {
        started.push(new TextDecoder().decode(msg.data));
        active++;
        maxActive = Math.max(maxActive, active);
        waiting.push({
          msg,
          release: () => {
            active--;
            msg.ack();
            resolve();
          },
        });
      }),
  });
  running.push(scheduler);
  return {
    scheduler,
    started,
    maxActive: () => maxActive,
    releaseAll: () => {
      for (const w of waiting.splice(0)) w.release();
    },
    releaseOne: () => waiting.shift()?.release(),
  };
}

async function publish(subject: string, payloads: string[]) {
  const js = nc.jetstream();
  await Promise.all(payloads.map((p) => js.publish(subject, new TextEncoder().encode(p))));
}

test("never more than max_concurrent at once: of six sub-tasks two run, the next starts only when one ends", async () => {
  const { names, queues } = await swarm("sched-slots");
  const w = held(names, queues, 2);
  await publish(names.taskQueue("code", 0), ["a", "b", "c", "d", "e", "f"]);
  await waitFor("two started", () => w.started.length === 2);
  // Give the scheduler every chance to overfill: a doorbell and an idle poll later, still two.
  await publish(names.taskQueue("code", 0), ["g"]);
  await waitFor("the poll after the doorbell", async () => (await consumerPending(names, 0)) === 5, 5_000);
  expect(w.started.length).toBe(2);
  w.releaseOne();
  await waitFor("a third start after a release", () => w.started.length === 3);
  // Finish whatever runs, again and again, until all seven have run: never more than two at once.
  await waitFor(
    "all seven started",
    () => {
      w.releaseAll();
      return w.started.length === 7;
    },
    10_000,
  );
  w.releaseAll();
  expect(w.maxActive()).toBe(2);
});

test("highest priority first: with the only slot busy, an urgent sub-task queued after three low ones runs next", async () => {
  const { names, queues } = await swarm("sched-prio");
  const w = held(names, queues, 1);
  await publish(names.taskQueue("code", 0), ["low-1"]);
  await waitFor("the first low one running", () => w.started.length === 1);
  await publish(names.taskQueue("code", 0), ["low-2", "low-3", "low-4"]);
  await publish(names.taskQueue("code", 3), ["urgent"]);
  w.releaseOne();
  await waitFor("the next start", () => w.started.length === 2);
  expect(w.started[1]).toBe("urgent");
});

test("a burst is shared: two idle schedulers with twelve slots each both run some of twelve sub-tasks", async () => {
  const { names, queues } = await swarm("sched-share");
  const a = held(names, queues, 12, 1);
  const b = held(names, queues, 12, 1);
  await publish(
    names.taskQueue("code", 0),
    Array.from({ length: 12 }, (_, i) => `t${i}`),
  );
  await waitFor("all twelve started", () => a.started.length + b.started.length === 12, 10_000);
  expect(a.started.length).toBeGreaterThan(0);
  expect(b.started.length).toBeGreaterThan(0);
  a.releaseAll();
  b.releaseAll();
});

test("stop: no pull after it, and the held sub-tasks are the runner's to finish", async () => {
  const { names, queues } = await swarm("sched-stop");
  const w = held(names, queues, 1);
  await publish(names.taskQueue("code", 0), ["x"]);
  await waitFor("x running", () => w.started.length === 1);
  await w.scheduler.stop();
  await publish(names.taskQueue("code", 0), ["y"]);
  w.releaseAll();
  // y stays queued for another node: nobody pulls it here.
  await waitFor(
    "y queued and x acked",
    async () => (await consumerPending(names, 0)) === 1 && (await consumerAckPending(names, 0)) === 0,
    5_000,
  );
  expect(w.started).toEqual(["x"]);
});

test("a queue the server removed under the scheduler is created again and its work taken (2.12+; 2.9 never removes one)", async () => {
  const { names, queues } = await swarm("sched-gone");
  const jsm = await nc.jetstreamManager();
  if (!durableInactivitySafe(nc)) {
    // 2.9-2.11: nobody sets an inactive threshold on a durable queue, so the server never removes one.
    const info = await jsm.consumers.info(names.streams.tasks, queues[0]!.durable);
    expect(info.config.inactive_threshold ?? 0).toBe(0);
    return;
  }
  const w = held(names, queues, 2);
  await jsm.consumers.delete(names.streams.tasks, names.consumers.queue("code", 0));
  await publish(names.taskQueue("code", 0), ["after the deletion"]);
  await waitFor("the sub-task taken from the re-created queue", () => w.started.includes("after the deletion"), 15_000);
  w.releaseAll();
});

async function consumerInfo(names: SwarmNames, prio: number) {
  const jsm = await nc.jetstreamManager();
  return jsm.consumers.info(names.streams.tasks, names.consumers.queue("code", prio));
}
const consumerPending = async (names: SwarmNames, prio: number) => (await consumerInfo(names, prio)).num_pending;
const consumerAckPending = async (names: SwarmNames, prio: number) => (await consumerInfo(names, prio)).num_ack_pending;
