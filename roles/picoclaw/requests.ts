// `picoclaw requests --failed`: the dead letters, requests the swarm gave up on after handling them
// failed again and again (each was answered as failed). Kept as long as the tasks bucket keeps records.

import type { Config } from "../../lib/config.ts";
import { ConfigError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { openTasksKv } from "../../lib/streams.ts";
import { listDeadLetters } from "../../lib/task-records.ts";
import { openClient } from "./client.ts";

export async function runRequests(cfg: Config, log: Logger, o: { failed: boolean; json: boolean }): Promise<number> {
  if (!o.failed) throw new ConfigError("requests", "command line", "--failed (the requests the swarm gave up on)");
  const client = await openClient(cfg, log, "picoclaw-requests");
  try {
    const { letters, unreadable } = await listDeadLetters(await openTasksKv(client.link.nc, client.names, cfg));
    // Records under dead.* that are not dead letters (written by hand, or by something else): said, not hidden.
    for (const u of unreadable) console.error(`picoclaw: ${u.key} is not a readable dead letter (${u.reason}); not listed`);
    if (o.json) {
      for (const l of letters) console.log(JSON.stringify(l));
      return 0;
    }
    if (letters.length === 0) {
      console.log(`no failed requests kept in swarm ${client.identity.hid}`);
      return 0;
    }
    for (const l of letters) {
      console.log(`${new Date(l.at).toISOString()}  ${l.request}  ${l.failures} failures  last error: ${l.error}`);
      console.log(`    ${l.text.replace(/\s+/g, " ").slice(0, 120)}`);
    }
    return 0;
  } finally {
    await client.close();
  }
}
