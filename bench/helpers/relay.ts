// Baseline for a coordinator hop: every request on <subject> is forwarded as a request to <next> (the
// responder, another process) and its reply relayed back. client -> relay -> responder -> relay -> client.
// Usage: bun bench/helpers/relay.ts <nats-url> <subject> <next>
import { connect } from "nats";

const [url, subject, next] = process.argv.slice(2);
const nc = await connect({ servers: url! });
nc.subscribe(subject!, {
  callback: (_e, m) => {
    nc.request(next!, m.data, { timeout: 10_000 }).then(
      (r) => m.respond(r.data),
      () => {},
    );
  },
});
await nc.flush();
console.log("ready");
process.on("SIGTERM", () => void nc.drain().then(() => process.exit(0)));
