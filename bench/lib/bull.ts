// BullMQ baselines on the bench's private Redis: add -> complete latency and throughput with N workers.
import { Queue, QueueEvents } from "bullmq";
import type { RedisServer } from "./redis.ts";
import { type Child, cpuMeter, pct, perItem, pool, startHelper, until } from "./util.ts";

const connection = (redis: RedisServer) => ({ host: "127.0.0.1", port: redis.port });

async function withQueue<T>(
  redis: RedisServer,
  name: string,
  workers: number,
  concurrency: number,
  fn: (queue: Queue, events: QueueEvents, procs: Child[]) => Promise<T>,
): Promise<T> {
  const queue = new Queue(name, {
    connection: connection(redis),
    defaultJobOptions: { removeOnComplete: { count: 1000 }, removeOnFail: { count: 1000 } },
  });
  const events = new QueueEvents(name, { connection: connection(redis) });
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
  const procs: Child[] = [];
  try {
    procs.push(
      ...(await Promise.all(
        Array.from({ length: workers }, () => startHelper("bull-worker", [String(redis.port), name, String(concurrency)])),
      )),
    );
    return await fn(queue, events, procs);
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await events.close();
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
  }
}

/** Sequential add -> completed (as seen by QueueEvents), one worker. */
export async function bullLatency(redis: RedisServer, name: string, n: number, warmup: number) {
  return withQueue(redis, name, 1, 32, async (queue, events) => {
    const one = async () => {
      const t = performance.now();
      const job = await queue.add("noop", { noop: true });
      await job.waitUntilFinished(events, 10_000);
      return performance.now() - t;
    };
    for (let i = 0; i < warmup; i++) await one();
    const lat: number[] = [];
    for (let i = 0; i < n; i++) lat.push(await one());
    return { p50: pct(lat, 50), p99: pct(lat, 99) };
  });
}

/** `n` jobs added at once (256 adds in flight) until QueueEvents has seen every one completed. */
export async function bullThroughput(redis: RedisServer, name: string, workers: number, concurrency: number, n: number) {
  return withQueue(redis, name, workers, concurrency, async (queue, events, procs) => {
    let completed = 0;
    events.on("completed", () => void completed++);
    const run = async (count: number) => {
      const start = completed;
      const t0 = performance.now();
      await pool(count, 256, () => queue.add("noop", { noop: true }));
      await until(`${count} BullMQ jobs completed`, () => completed - start >= count, 120_000, 2);
      return count / ((performance.now() - t0) / 1000);
    };
    await run(Math.min(200, n)); // warm-up
    const cpu = await cpuMeter({ "redis-server": [redis.pid], workers: procs.map((p) => p.pid), bench: [process.pid] });
    const rate = await run(n);
    return { rate, cpuPerItem: perItem(await cpu(), n) };
  });
}
