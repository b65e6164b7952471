// Many simulated swarm nodes in one process: one NATS connection per node, each announcing itself and
// publishing a full NodeInfo heartbeat (lib/messages.ts nodeInfoSchema) on swarmNames(hid).heartbeat(node)
// every <interval-ms>, phases spread evenly over the interval as independent nodes would be.
// Usage: bun bench/helpers/sim-nodes.ts <nats-url> <hid> <count> <interval-ms>
import { connect, type NatsConnection } from "nats";
import { newNodeId, newRequestId, newSessionId } from "../../lib/ids.ts";
import { encode, type NodeInfo, nodeInfoSchema } from "../../lib/messages.ts";
import { swarmNames } from "../../lib/subjects.ts";
import { VERSION } from "../../lib/version.ts";

const [url, hid, countArg, intervalArg] = process.argv.slice(2);
const count = Number(countArg);
const interval = Number(intervalArg);
const names = swarmNames(hid!);
const startedAt = Date.now();

interface Sim {
  nc: NatsConnection;
  info: () => NodeInfo;
  timer?: Timer;
}
let stopped = false;

const sims: Sim[] = await Promise.all(
  Array.from({ length: count }, async (_, i) => {
    const nc = await connect({ servers: url!, name: `bench-sim-${i}` });
    const node = newNodeId();
    const sid = newSessionId();
    // A realistic mix: every third node idle, the others running one or two sub-tasks.
    const tasks = Array.from({ length: i % 3 }, (_, k) => ({
      request: newRequestId(),
      task: `t${k}`,
      capability: "general",
      started_at: startedAt,
    }));
    const info = (): NodeInfo => ({
      v: 1,
      node,
      sid,
      role: i % 10 === 0 ? "specialist" : "worker",
      capabilities: i % 10 === 0 ? ["security"] : ["general"],
      max_concurrent: 4,
      running: tasks.length,
      status: "online",
      version: VERSION,
      started_at: startedAt,
      heartbeat_interval: interval,
      host: `sim-host-${i % 8}`,
      tasks,
      done: i * 7,
      failed: i % 5 === 0 ? 1 : 0,
    });
    const parsed = nodeInfoSchema.safeParse(info());
    if (!parsed.success) throw new Error(`simulated NodeInfo does not match the schema: ${parsed.error.message}`);
    return { nc, info };
  }),
);

for (const s of sims) s.nc.publish(names.announce, encode({ v: 1, kind: "join", info: s.info() }));
sims.forEach((s, i) => {
  setTimeout(
    () => {
      if (stopped) return;
      const beat = () => s.nc.publish(names.heartbeat(s.info().node), encode(s.info()));
      beat();
      s.timer = setInterval(beat, interval);
    },
    (i * interval) / count,
  );
});
await Promise.all(sims.map((s) => s.nc.flush()));
console.log("ready");

process.on("SIGTERM", async () => {
  stopped = true;
  for (const s of sims) {
    clearInterval(s.timer);
    s.nc.publish(names.announce, encode({ v: 1, kind: "leave", info: s.info() }));
  }
  await Promise.all(sims.map((s) => s.nc.drain().catch(() => {})));
  process.exit(0);
});
