// `picoclaw drain|shutdown|ping <node-id>`: asks one node over `node.<id>.control`, prints its answer.
// With swarm.security.signing, drain and shutdown are signed with swarm.security.key_file (an admin key).

import type { Config } from "../../lib/config.ts";
import { validateId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { type Control, controlReplySchema, decode, encode } from "../../lib/messages.ts";
import { loadKey, signMessage } from "../../lib/signing.ts";
import { openClient } from "./client.ts";

/** `picoclaw drain|shutdown|ping <node-id>`: asks one node, prints its answer. Exit 0 when it agreed. */
export async function runControlCommand(cfg: Config, log: Logger, action: Control["action"], node: string): Promise<number> {
  validateId("node id", node);
  const client = await openClient(cfg, log, `picoclaw-${action}`);
  try {
    const subject = client.names.control(node);
    const payload = encode({ v: 1, action });
    // With signing on, drain and shutdown carry this admin's signature (ping stays open).
    const signed = cfg.swarm.security.signing && action !== "ping" ? signMessage(loadKey(cfg), subject, payload) : undefined;
    const reply = await client.link.nc.request(subject, payload, { timeout: 5_000, headers: signed });
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
