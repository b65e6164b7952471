// Footprint baseline: the least a compiled Bun program on NATS does — connect, subscribe, say so, idle.
// Compiled by the bench (`bun build --compile --minify`) and compared with dist/picoclaw-worker.
// Usage: bare-node <nats-url>
import { connect } from "nats";

const nc = await connect({ servers: process.argv[2]! });
nc.subscribe("bench.bare.>", { callback: () => {} });
await nc.flush();
console.log("ready");
process.on("SIGTERM", () => void nc.drain().then(() => process.exit(0)));
