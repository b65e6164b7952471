// `node.<id>.control`: ping, drain or shut down one node by request. Replies say what the node will do.
import type { NatsConnection, Subscription } from "nats";
import type { BadInputCounter } from "./bad-input.ts";
import { openClient } from "./client.ts";
import type { Config } from "./config.ts";
import { validateId } from "./ids.ts";
import type { Logger } from "./log.ts";
import { type Control, controlReplySchema, controlSchema, decode, encode } from "./messages.ts";
import type { SwarmNames } from "./subjects.ts";

export interface ControlOptions {
  nc: NatsConnection;
  names: SwarmNames;
  node: string;
  log: Logger;
  bad: BadInputCounter;
  /** Asked to stop: drain (finish running work first) or shutdown. */
  onStop: (action: Exclude<Control["action"], "ping">) => void;
}

export function serveControl(o: ControlOptions): Subscription {
  return o.nc.subscribe(o.names.control(o.node), {
    callback: (_err, msg) => {
      const d = decode(controlSchema, msg.data);
      if (!d.ok) {
        o.bad.record(msg.subject, d.reason);
        if (msg.reply) msg.respond(encode({ v: 1, ok: false, node: o.node, detail: `rejected: ${d.reason}` }));
        return;
      }
      const { action } = d.value;
      if (msg.reply) msg.respond(encode({ v: 1, ok: true, node: o.node, detail: action === "ping" ? "pong" : `${action} started` }));
      if (action !== "ping") {
        o.log.info("Stop requested over NATS", { node: o.node, action });
        o.onStop(action);
      }
    },
  });
}

/** `picoclaw drain|shutdown|ping <node-id>`: asks one node, prints its answer. Exit 0 when it agreed. */
export async function runControlCommand(cfg: Config, log: Logger, action: Control["action"], node: string): Promise<number> {
  validateId("node id", node);
  const client = await openClient(cfg, log, `picoclaw-${action}`);
  try {
    const reply = await client.link.nc.request(client.names.control(node), encode({ v: 1, action }), { timeout: 5_000 });
    const d = decode(controlReplySchema, reply.data);
    if (!d.ok) throw new Error(`unexpected reply from ${node}: ${d.reason}`);
    console.log(`${node}: ${d.value.detail}`);
    return d.value.ok ? 0 : 1;
  } catch (err) {
    const msg = (err as Error).message;
    if (/503|no responders|timeout/i.test(msg)) {
      console.error(`picoclaw: no node ${node} answered in swarm ${client.identity.hid} (is it running, with this H-id?)`);
      return 1;
    }
    throw err;
  } finally {
    await client.close();
  }
}
