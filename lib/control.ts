// `node.<id>.control`: a node answers ping, drain and shutdown requests. Replies say what it will do.
// With swarm.security.signing, drain and shutdown must be signed by a key in trusted_admins (within
// max_skew, nonce not seen by this node, signed after it started); anything else is refused with a
// reply that says why, counted and logged. Ping stays open: it tells no more than the node's heartbeats
// already do. With signing on every reply is signed with the node's own key, so a client can tell the
// node's answer from a member's forgery.
import type { Msg, NatsConnection, Subscription } from "nats";
import type { BadInputCounter } from "./bad-input.ts";
import type { Logger } from "./log.ts";
import { type Control, controlSchema, decode, encode } from "./messages.ts";
import { ControlReplayGuard, type Signer, signMessage, verifyControl } from "./signing.ts";
import type { SwarmNames } from "./subjects.ts";

export interface ControlSecurity {
  trustedAdmins: ReadonlySet<string>;
  maxSkewMs: number;
  /** This node's key: replies are signed with it. */
  signer: Signer;
}

export interface ControlOptions {
  nc: NatsConnection;
  names: SwarmNames;
  node: string;
  log: Logger;
  bad: BadInputCounter;
  /** With signing on: who may drain or shut this node down. */
  security?: ControlSecurity;
  /** Asked to stop: drain (finish running work first) or shutdown. */
  onStop: (action: Exclude<Control["action"], "ping">) => void;
}

export function serveControl(o: ControlOptions): Subscription {
  if (o.security && o.security.trustedAdmins.size === 0) {
    o.log.warn("Drain and shutdown over NATS are refused: swarm.security.trusted_admins is empty (signals still stop this node)", {
      node: o.node,
    });
  }
  const replays = new ControlReplayGuard();
  const reply = (msg: Msg, ok: boolean, detail: string) => {
    if (!msg.reply) return;
    const payload = encode({ v: 1, ok, node: o.node, detail });
    msg.respond(payload, o.security ? { headers: signMessage(o.security.signer, msg.reply, payload) } : undefined);
  };
  const handle = async (msg: Msg) => {
    const d = decode(controlSchema, msg.data);
    if (!d.ok) {
      o.bad.record(msg.subject, d.reason);
      return reply(msg, false, `rejected: ${d.reason}`);
    }
    const { action } = d.value;
    if (action === "ping") return reply(msg, true, "pong");
    if (o.security) {
      const s = o.security;
      const verdict = verifyControl(msg.subject, msg.data, msg.headers, s.trustedAdmins, s.maxSkewMs, replays);
      if (!verdict.ok) {
        o.log.warn("Control request refused", { node: o.node, action, reason: verdict.reason });
        if (verdict.transient) return reply(msg, false, `refused for now (${verdict.reason}); try again`);
        o.bad.refuse(msg.subject, "control", `${action}: ${verdict.reason}`);
        return reply(
          msg,
          false,
          `refused: ${action} ${verdict.reason} (signing is on: it must be signed by a key in swarm.security.trusted_admins)`,
        );
      }
    }
    reply(msg, true, `${action} started`);
    o.log.info("Stop requested over NATS", { node: o.node, action });
    o.onStop(action);
  };
  return o.nc.subscribe(o.names.control(o.node), {
    callback: (_err, msg) => {
      handle(msg).catch((err) => o.log.warn("Control request not handled", { node: o.node, error: (err as Error).message }));
    },
  });
}
