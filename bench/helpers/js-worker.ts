// Baseline JetStream work-queue worker: consumes a durable pull consumer (up to <inflight> messages
// outstanding), acks each message, and reports how many it acked on `<done-subject>` every few ms.
// Usage: bun bench/helpers/js-worker.ts <nats-url> <stream> <durable> <inflight> <done-subject>
import { connect } from "nats";

const [url, stream, durable, inflight, doneSubject] = process.argv.slice(2);
const nc = await connect({ servers: url! });
const js = nc.jetstream();
const consumer = await js.consumers.get(stream!, durable!);
const messages = await consumer.consume({ max_messages: Number(inflight) });
let acked = 0;
const flush = setInterval(() => {
  if (acked === 0) return;
  nc.publish(doneSubject!, String(acked));
  acked = 0;
}, 2);
console.log("ready");
process.on("SIGTERM", () => {
  clearInterval(flush);
  messages.stop();
  void nc.drain().then(() => process.exit(0));
});
for await (const m of messages) {
  m.ack();
  acked++;
}
