// The gate before a call that tools.approval.required names: run it once a person approved it, answer
// the model `denied: ...` when they denied it or nobody decided in time, else store the call as pending
// and park the sub-task (the runner acks its message: waiting holds no slot and spends no delivery; the
// coordinator sends it again once the call is decided).
import type { KV } from "nats";
import {
  approvalId,
  argumentsDigest,
  type Decision,
  deniedContent,
  MAX_SHOWN_ARGUMENTS,
  markStarted,
  needsApproval,
  type PendingCall,
  readDecision,
  readPending,
  storePending,
} from "../../lib/approvals.ts";
import { formatDuration } from "../../lib/duration.ts";
import type { ToolCall } from "../../lib/llm-types.ts";
import type { RecordGuard } from "../../lib/record-guard.ts";
import type { ApprovalNote } from "../../lib/task-messages.ts";

export type GateVerdict =
  | { kind: "run"; approval: ApprovalNote }
  | { kind: "refuse"; content: string; outcome: "denied" | "timed_out" | "interrupted"; approval: ApprovalNote }
  | { kind: "park"; pending: PendingCall };

export interface ApprovalGate {
  needs(tool: string): boolean;
  check(task: { request: string; task: string; capability: string }, call: ToolCall, step: number, reason: string): Promise<GateVerdict>;
}

/** Thrown by the loop when calls wait for a decision: the sub-task parks until they are decided. */
export class ParkedError extends Error {
  override name = "ParkedError";
  constructor(readonly pending: PendingCall[]) {
    super(`waiting for approval of ${pending.map((p) => `${p.tool} (${p.id})`).join(", ")}`);
  }
}

export interface GateOptions {
  kv: KV;
  node: string;
  required: readonly string[];
  timeoutMs: number;
  /** Pending calls (sealed by this node with signing on). */
  records: RecordGuard;
  /** Decisions (with signing on, only those sealed by a trusted approver count). */
  decisions: RecordGuard;
}

export function approvalGate(o: GateOptions): ApprovalGate | undefined {
  if (o.required.length === 0) return undefined;
  const note = (d: Decision): ApprovalNote => ({ id: d.id, outcome: d.outcome, by: d.by, at: d.at, note: d.note });
  return {
    needs: (tool) => needsApproval(o.required, tool),
    async check(task, call, step, reason) {
      const id = approvalId(task.request, task.task, step);
      const decision = await readDecision(o.kv, id, o.decisions);
      if (decision?.outcome === "approved" && decision.args_sha256 && decision.args_sha256 !== argumentsDigest(call.arguments)) {
        return {
          kind: "refuse",
          content: deniedContent("the arguments that were approved are not this call's (its pending record was changed); not run"),
          outcome: "denied",
          approval: note(decision),
        };
      }
      if (decision?.outcome === "approved") {
        const pending = await readPending(o.kv, id, o.records);
        if (pending && (await markStarted(o.kv, pending, o.node, o.records))) return { kind: "run", approval: note(decision) };
        return {
          kind: "refuse",
          content:
            "interrupted: this approved call was started by a worker that stopped before its result was recorded; it may or may not have taken effect. Check before repeating it.",
          outcome: "interrupted",
          approval: note(decision),
        };
      }
      if (decision) {
        return {
          kind: "refuse",
          content: deniedContent(decision.note || `denied by ${decision.by}`),
          outcome: "denied",
          approval: note(decision),
        };
      }
      const now = Date.now();
      const pending = await storePending(
        o.kv,
        {
          v: 1,
          id,
          request: task.request,
          task: task.task,
          node: o.node,
          capability: task.capability,
          step,
          call_id: call.id,
          tool: call.name,
          arguments: call.arguments.slice(0, MAX_SHOWN_ARGUMENTS),
          reason: reason.trim() ? reason.trim().slice(0, 2_000) : undefined,
          created_at: now,
          expires_at: now + o.timeoutMs,
        },
        o.records,
      );
      if (now >= pending.expires_at) {
        const waited = formatDuration(pending.expires_at - pending.created_at);
        return {
          kind: "refuse",
          content: deniedContent(`approval timed out: nobody approved or denied it within ${waited} (tools.approval.timeout)`),
          outcome: "timed_out",
          approval: { id, outcome: "timed_out", at: pending.expires_at },
        };
      }
      return { kind: "park", pending };
    },
  };
}
