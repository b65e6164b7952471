// Optional Temporal link (durable workflows come later). @temporalio/client is imported only when an
// address is configured, so nodes without Temporal never load it.
import type { Config } from "./config.ts";
import { portOpen } from "./embedded-nats.ts";
import type { Logger } from "./log.ts";

export interface TemporalLink {
  enabled: boolean;
  connected: boolean;
  address: string;
  close(): Promise<void>;
}

const OFF: TemporalLink = { enabled: false, connected: false, address: "", close: async () => {} };

/** Never throws: an unreachable Temporal logs the guide's warning once and the node goes on without it. */
export async function connectTemporal(cfg: Config, log: Logger): Promise<TemporalLink> {
  const t = cfg.swarm.temporal;
  if (t.address === "" || t.enabled === false) return OFF;
  try {
    // A closed port fails at once instead of after the client's connect deadline.
    const [host, port] = splitAddress(t.address);
    if (!(await portOpen(host, port, 1_000))) throw new Error(`nothing listening on ${t.address}`);
    const { Connection } = await import("@temporalio/client");
    const conn = await Connection.connect({ address: t.address, connectTimeout: "3s" });
    log.info("Temporal connected", { address: t.address, namespace: t.namespace });
    return { enabled: true, connected: true, address: t.address, close: () => conn.close() };
  } catch (err) {
    log.warn("Temporal connection failed (workflows disabled)", {
      address: t.address,
      error: (err as Error).message.split("\n")[0],
    });
    return { ...OFF, enabled: true, address: t.address };
  }
}

function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  if (i <= 0) return [address, 7233];
  return [address.slice(0, i).replace(/^\[|\]$/g, ""), Number(address.slice(i + 1)) || 7233];
}
