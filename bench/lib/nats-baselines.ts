// Raw NATS baselines: request/reply over 1 hop (responder) and 2 hops (relay -> responder), and a
// JetStream work-queue stream consumed by N worker processes.
import { AckPolicy, DeliverPolicy, type NatsConnection, nanos, RetentionPolicy, StorageType } from "nats";
import { encode } from "../../lib/messages.ts";
import { type Child, cpuMeter, pct, perItem, pool, startHelper, until } from "./util.ts";

export interface Latency {
  p50: number;
  p99: number;
}

async function timeRequests(nc: NatsConnection, subject: string, n: number, warmup: number): Promise<Latency> {
  const body = encode({ v: 1, noop: true });
  for (let i = 0; i < warmup; i++) await nc.request(subject, body, { timeout: 5_000 });
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await nc.request(subject, body, { timeout: 5_000 });
    lat.push(performance.now() - t);
  }
  return { p50: pct(lat, 50), p99: pct(lat, 99) };
}

/** client -> responder -> client, sequential; plus throughput with 64 requests in flight. */
export async function oneHop(nc: NatsConnection, url: string, tag: string, n: number, warmup: number, rateN: number) {
  const subject = `bench.${tag}.echo`;
  const responder = await startHelper("responder", [url, subject]);
  try {
    const lat = await timeRequests(nc, subject, n, warmup);
    const body = encode({ v: 1, noop: true });
    const t0 = performance.now();
    await pool(rateN, 64, () => nc.request(subject, body, { timeout: 10_000 }));
    return { ...lat, rate: rateN / ((performance.now() - t0) / 1000) };
  } finally {
    await responder.stop();
  }
}

/** client -> relay process -> responder process -> relay -> client (a coordinator's extra hop). */
export async function twoHops(nc: NatsConnection, url: string, tag: string, n: number, warmup: number): Promise<Latency> {
  const echo = `bench.${tag}.echo2`;
  const relayed = `bench.${tag}.relay`;
  const procs: Child[] = [];
  try {
    procs.push(await startHelper("responder", [url, echo]));
    procs.push(await startHelper("relay", [url, relayed, echo]));
    return await timeRequests(nc, relayed, n, warmup);
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
  }
}

/** A sub-task-sized payload (what the coordinator publishes for one no-op sub-task). */
const TASK_PAYLOAD = encode({
  v: 1,
  request: "r-0123456789",
  task: "general",
  title: "general (general)",
  capability: "general",
  priority: 1,
  prompt: "noop",
  inputs: [],
  timeout_ms: 300000,
  coordinator: "claw-01234567",
});

/**
 * Raw JetStream work queue: a file-stored work-queue stream (like the swarm's TASKS stream), one
 * durable pull consumer shared by `workers` processes (each `inflight` messages outstanding), acking
 * every message. `n` messages published (256 in flight) until the workers have acked them all.
 */
export async function jetstreamThroughput(
  nc: NatsConnection,
  url: string,
  natsPid: number,
  tag: string,
  workers: number,
  inflight: number,
  n: number,
) {
  const jsm = await nc.jetstreamManager();
  const stream = `BENCH_WQ_${tag}`;
  const subject = `bench.wq.${tag}`;
  const durable = "workers";
  const done = `bench.wq.${tag}.done`;
  await jsm.streams.add({
    name: stream,
    subjects: [subject],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    num_replicas: 1,
    max_msg_size: 1024 * 1024,
    duplicate_window: nanos(120_000),
  });
  await jsm.consumers.add(stream, {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(30_000),
    max_deliver: 5,
    max_ack_pending: 10_000,
  });
  let acked = 0;
  const sub = nc.subscribe(done, {
    callback: (_e, m) => {
      acked += Number(new TextDecoder().decode(m.data));
    },
  });
  const procs: Child[] = [];
  try {
    procs.push(
      ...(await Promise.all(
        Array.from({ length: workers }, () => startHelper("js-worker", [url, stream, durable, String(inflight), done])),
      )),
    );
    await nc.flush();
    const js = nc.jetstream();
    const run = async (count: number) => {
      const start = acked;
      const t0 = performance.now();
      await pool(count, 256, () => js.publish(subject, TASK_PAYLOAD));
      await until(`${count} JetStream messages acked`, () => acked - start >= count, 120_000, 1);
      return count / ((performance.now() - t0) / 1000);
    };
    await run(Math.min(500, n)); // warm-up
    const cpu = await cpuMeter({ "nats-server": [natsPid], workers: procs.map((p) => p.pid), bench: [process.pid] });
    const rate = await run(n);
    return { rate, cpuPerItem: perItem(await cpu(), n) };
  } finally {
    sub.unsubscribe();
    await Promise.all(procs.map((p) => p.stop()));
    await jsm.streams.delete(stream).catch(() => {});
  }
}
