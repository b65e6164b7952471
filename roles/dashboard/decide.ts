// The web dashboard's Approve and Deny: POST /api/approvals/decide { id, outcome, note, by }. Behind the
// page's own access (dashboard keys) and a second secret, swarm.http.approval_token, sent in a header
// the page's user typed it into (a custom header also keeps other sites' pages from posting here). Without
// the token the route refuses and the page shows the calls read-only, saying why.
import { createHash, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { DECISION_OUTCOMES, decideCall, untrustedApprover } from "../../lib/approvals.ts";
import type { Handler } from "../../lib/http.ts";
import { ID_PATTERN } from "../../lib/ids.ts";
import type { SwarmNode } from "../../lib/node.ts";
import { loadKey, sealRecord } from "../../lib/signing.ts";
import type { ApprovalsWatch } from "./approvals.ts";

export const APPROVAL_TOKEN_HEADER = "x-picoclaw-approval-token";

const bodySchema = z.strictObject({
  id: z.string().regex(ID_PATTERN),
  outcome: z.enum(DECISION_OUTCOMES),
  note: z.string().max(2_000).optional(),
  /** Who clicked (typed into the page; kept with the decision beside the dashboard's node id). */
  by: z.string().max(80).optional(),
});

export interface ApprovalRoute {
  enabled: boolean;
  readOnly?: string;
  handler: Handler;
}

export function approvalRoute(node: SwarmNode, approvals: ApprovalsWatch | undefined): ApprovalRoute {
  const cfg = node.config;
  const token = cfg.swarm.http.approval_token;
  const readOnly = !approvals
    ? "this dashboard's NATS user cannot read the tasks bucket"
    : !token
      ? "swarm.http.approval_token is not set on this dashboard: decide with picoclaw approve ID / deny ID"
      : undefined;
  if (readOnly && approvals) node.log.info(`Web dashboard shows tool calls waiting for approval read-only: ${readOnly}`);
  const expected = token ? digest(token) : undefined;
  // With signing on, decisions are sealed with this dashboard's key (it must be a trusted approver's).
  const signer = !readOnly && cfg.swarm.security.signing ? loadKey(cfg) : undefined;
  const untrusted = signer && untrustedApprover(cfg.swarm.security, signer.publicKey);
  const fail = (status: number, error: string) => Response.json({ error }, { status, headers: { "cache-control": "no-store" } });
  const handler: Handler = async (req) => {
    if (req.method !== "POST") return fail(405, "POST a decision: { id, outcome: approved | denied, note }");
    if (readOnly || !expected || !approvals) return fail(403, `read-only: ${readOnly}`);
    if (untrusted) return fail(403, `not decided: ${untrusted}`);
    const given = req.headers.get(APPROVAL_TOKEN_HEADER);
    if (!given || !timingSafeEqual(digest(given), expected)) return fail(401, "wrong or missing approval token");
    let body: z.infer<typeof bodySchema>;
    try {
      body = bodySchema.parse(await req.json());
    } catch (err) {
      return fail(400, `a decision is { id, outcome: approved | denied, note?, by? }: ${(err as Error).message.slice(0, 300)}`);
    }
    const by = `${body.by?.trim() || "web"} via dashboard ${node.identity.node}${signer ? ` (${signer.publicKey})` : ""}`;
    try {
      const r = await decideCall(
        approvals.kv,
        { id: body.id, outcome: body.outcome, by, note: body.note },
        signer ? (key, rec) => sealRecord(signer, key, rec) : undefined,
      );
      if (r.kind === "decided") {
        node.log.info(`Tool call ${r.decision.outcome} from the web dashboard`, { approval: r.decision.id, tool: r.call.tool, by });
        return Response.json({ decision: r.decision });
      }
      if (r.kind === "unknown") return fail(404, `no tool call ${body.id} is waiting for approval`);
      if (r.kind === "closed") return fail(410, `${body.id} can no longer be decided: ${r.why}`);
      const f = r.first;
      return fail(
        409,
        f ? `${body.id} was already ${f.outcome} by ${f.by} at ${new Date(f.at).toISOString()}` : `${body.id} was decided already`,
      );
    } catch (err) {
      return fail(503, `the decision could not be stored: ${(err as Error).message}`);
    }
  };
  return { enabled: !readOnly, readOnly, handler };
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}
