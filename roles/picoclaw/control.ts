// `picoclaw drain|shutdown|ping <node-id>`: asks one node over `node.<id>.control`, prints its answer.
import { openClient } from "../../lib/client.ts";
import type { Config } from "../../lib/config.ts";
import { validateId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { type Control, controlReplySchema, decode, encode } from "../../lib/messages.ts";

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
