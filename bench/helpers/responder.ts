// Baseline peer: answers every request on one subject, in its own process, as a swarm node would.
// Usage: bun bench/helpers/responder.ts <nats-url> <subject>
import { connect } from "nats";

const [url, subject] = process.argv.slice(2);
const nc = await connect({ servers: url! });
nc.subscribe(subject!, { callback: (_e, m) => m.respond(m.data) });
await nc.flush();
console.log("ready");
process.on("SIGTERM", () => void nc.drain().then(() => process.exit(0)));
