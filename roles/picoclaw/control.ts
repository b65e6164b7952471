// `picoclaw drain|shutdown|ping <node-id>`: asks one node over `node.<id>.control`, prints its answer.
// With swarm.security.signing, drain and shutdown are signed with swarm.security.key_file (an admin key).
// Any member may answer on a control subject, so the answer believed is the asked node's own: its id in
// the reply, and with signing on its signature by a key in trusted_coordinators or trusted_workers.

import { type Msg, RequestStrategy } from "nats";
import type { Config } from "../../lib/config.ts";
import { validateId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { type Control, type ControlReply, controlReplySchema, decode, encode } from "../../lib/messages.ts";
import { checkSignature, loadKey, signMessage } from "../../lib/signing.ts";
import { openClient } from "./client.ts";

/** After the first reply, how long other replies (a forger's, or the real node's after one) may take. */
const MORE_REPLIES_MS = 300;

/** `picoclaw drain|shutdown|ping <node-id>`: asks one node, prints its answer. Exit 0 when it agreed. */
export async function runControlCommand(cfg: Config, log: Logger, action: Control["action"], node: string): Promise<number> {
  validateId("node id", node);
  const client = await openClient(cfg, log, `picoclaw-${action}`);
  try {
    const subject = client.names.control(node);
    const payload = encode({ v: 1, action });
    // With signing on, drain and shutdown carry this admin's signature (ping stays open).
    const signed = cfg.swarm.security.signing && action !== "ping" ? signMessage(loadKey(cfg), subject, payload) : undefined;
    const replies: Msg[] = [];
    const many = await client.link.nc.requestMany(subject, payload, {
      strategy: RequestStrategy.JitterTimer,
      jitter: MORE_REPLIES_MS,
      maxWait: 5_000,
      headers: signed,
    });
    for await (const m of many) replies.push(m);
    if (replies.length === 0) {
      console.error(`picoclaw: no node ${node} answered in swarm ${client.identity.hid} (is it running, with this H-id?)`);
      return 1;
    }
    const answer = believed(cfg, node, replies);
    if (!answer) return 1;
    console.log(`${node}: ${answer.detail}`);
    return answer.ok ? 0 : 1;
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

/**
 * The asked node's answer among the replies, or undefined (said why on stderr). A reply from another
 * node, or (signing on) one not signed by a trusted node key, is refused; two different unsigned answers
 * claiming the same node cannot be told apart and are both refused.
 */
function believed(cfg: Config, node: string, replies: Msg[]): ControlReply | undefined {
  const sec = cfg.swarm.security;
  const trusted = new Set([...sec.trusted_coordinators, ...sec.trusted_workers]);
  const good: ControlReply[] = [];
  for (const m of replies) {
    const d = decode(controlReplySchema, m.data);
    const why = !d.ok
      ? `malformed (${d.reason})`
      : d.value.node !== node
        ? `it names node ${d.value.node}`
        : sec.signing
          ? signatureProblem(m, trusted)
          : undefined;
    if (why || !d.ok) console.error(`picoclaw: refused a reply to the control request for ${node}: ${why}`);
    else good.push(d.value);
  }
  if (good.length === 0) {
    console.error(`picoclaw: no reply from ${node} itself could be believed`);
    return undefined;
  }
  const distinct = new Set(good.map((r) => `${r.ok} ${r.detail}`));
  if (distinct.size > 1) {
    console.error(
      `picoclaw: ${good.length} different replies claim to be ${node} (${[...distinct].join(" | ")}); turn on swarm.security.signing to tell them apart`,
    );
    return undefined;
  }
  return good[0];
}

function signatureProblem(m: Msg, trusted: ReadonlySet<string>): string | undefined {
  if (trusted.size === 0) return "it cannot be verified: list the nodes' keys in swarm.security.trusted_coordinators or trusted_workers";
  const v = checkSignature(m.subject, m.data, m.headers, trusted, undefined);
  return v.ok ? undefined : v.reason;
}
