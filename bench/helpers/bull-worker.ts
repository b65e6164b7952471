// Baseline BullMQ worker: a no-op processor with the given concurrency on one queue.
// Usage: bun bench/helpers/bull-worker.ts <redis-port> <queue> <concurrency>
import { Worker } from "bullmq";

const [port, queue, concurrency] = process.argv.slice(2);
const worker = new Worker(queue!, async () => "ok", {
  connection: { host: "127.0.0.1", port: Number(port) },
  concurrency: Number(concurrency),
});
await worker.waitUntilReady();
console.log("ready");
process.on("SIGTERM", () => void worker.close().then(() => process.exit(0)));
