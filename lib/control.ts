// `node.<id>.control`: a node answers ping, drain and shutdown requests. Replies say what it will do.
import type { NatsConnection, Subscription } from "nats";
import type { BadInputCounter } from "./bad-input.ts";
import type { Logger } from "./log.ts";
import { type Control, controlSchema, decode, encode } from "./messages.ts";
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
