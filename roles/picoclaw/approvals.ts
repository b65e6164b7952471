// `picoclaw approvals`, `approve ID [--note TEXT]` and `deny ID [--reason TEXT]`: the tool calls waiting
// for a person, and the decision on one. A decision is created once in the tasks bucket (the server
// refuses a second create), so the first one from any surface counts; a second is refused here with
// the first one's outcome and who made it. With signing on it is sealed with swarm.security.key_file,
// and workers accept it only from a key in trusted_approvers (or trusted_admins).
import { hostname, userInfo } from "node:os";
import { type Decision, decideCall, pendingCalls, printable, untrustedApprover } from "../../lib/approvals.ts";
import type { Config } from "../../lib/config.ts";
import { formatDuration } from "../../lib/duration.ts";
import { validateId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { loadKey, sealRecord } from "../../lib/signing.ts";
import { openTasksKv } from "../../lib/streams.ts";
import { briefArgs } from "../../lib/task-messages.ts";
import { openClient } from "./client.ts";

export async function runApprovals(cfg: Config, log: Logger, json: boolean): Promise<number> {
  const client = await openClient(cfg, log, "picoclaw-approvals");
  try {
    const calls = await pendingCalls(await openTasksKv(client.link.nc, client.names, cfg));
    if (json) {
      for (const c of calls) {
        const { id, request, task, node, capability, tool, arguments: args, reason, created_at, expires_at } = c;
        console.log(JSON.stringify({ id, request, task, node, capability, tool, arguments: args, reason, created_at, expires_at }));
      }
      return 0;
    }
    if (calls.length === 0) {
      console.log(`no tool calls waiting for approval in swarm ${client.identity.hid}`);
      return 0;
    }
    const now = Date.now();
    for (const c of calls) {
      console.log(
        `${c.id}  ${c.request}/${c.task}  ${c.node}  ${c.tool} ${printable(briefArgs(c.arguments))}  waiting ${formatDuration(now - c.created_at)}, times out in ${formatDuration(c.expires_at - now)}`,
      );
      // What would run, whole (control characters shown as �): the decision covers exactly these arguments.
      console.log(`    arguments: ${printable(c.arguments, 4_000)}`);
      if (c.reason) console.log(`    the model said: ${printable(c.reason.replace(/\s+/g, " "), 300)}`);
    }
    console.log("approve: picoclaw approve ID [--note TEXT] · deny: picoclaw deny ID [--reason TEXT]");
    return 0;
  } finally {
    await client.close();
  }
}

/** `approve` / `deny`: exit 0 when this decision counted, 1 when it was refused (decided already, withdrawn, unknown). */
export async function runDecision(cfg: Config, log: Logger, outcome: Decision["outcome"], id: string, note?: string): Promise<number> {
  validateId("approval id", id);
  // With signing on the decision is sealed: a missing key stops here, before anything is written.
  const signer = cfg.swarm.security.signing ? loadKey(cfg) : undefined;
  // A decision workers would not trust still takes the call's one decision: refused here when the config says so.
  const untrusted = signer && untrustedApprover(cfg.swarm.security, signer.publicKey);
  if (untrusted) {
    console.error(`picoclaw: not decided: ${untrusted}`);
    return 1;
  }
  const client = await openClient(cfg, log, `picoclaw-${outcome === "approved" ? "approve" : "deny"}`);
  try {
    const kv = await openTasksKv(client.link.nc, client.names, cfg);
    const by = signer?.publicKey ?? `${userInfo().username}@${hostname()}`;
    const r = await decideCall(kv, { id, outcome, by, note }, signer ? (key, rec) => sealRecord(signer, key, rec) : undefined);
    if (r.kind === "unknown") {
      console.error(`picoclaw: no tool call ${id} is waiting for approval in swarm ${client.identity.hid} (picoclaw approvals lists them)`);
      return 1;
    }
    if (r.kind === "closed") {
      console.error(`picoclaw: ${id} can no longer be decided: ${r.why}`);
      return 1;
    }
    if (r.kind === "refused") {
      if (r.first) return refused(r.first);
      console.error(`picoclaw: ${id} was decided already (its decision record is not readable)`);
      return 1;
    }
    const { call } = r;
    console.log(`${outcome} ${id}: ${call.tool} ${briefArgs(call.arguments)} of ${call.request}/${call.task} (by ${by})`);
    return 0;
  } finally {
    await client.close();
  }
}

function refused(first: Decision): number {
  const note = first.note ? ` (${first.note})` : "";
  console.error(`picoclaw: refused: ${first.id} was already ${first.outcome} by ${first.by} at ${new Date(first.at).toISOString()}${note}`);
  return 1;
}
