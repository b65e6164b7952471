// The coordinator's side of approvals: it hears each decision as it is stored (a plain subscription on
// the decision keys' subjects: a KV create is a publish there), reads the decisions of sub-tasks it finds
// parked, and keeps the audit trail: a `decision` event in the request's events and /metrics counts.
import type { KV, KvEntry, NatsConnection } from "nats";
import { type Decision, decisionSchema, readDecision } from "../../lib/approvals.ts";
import type { Logger } from "../../lib/log.ts";
import type { Metrics } from "../../lib/metrics.ts";
import type { RecordGuard } from "../../lib/record-guard.ts";
import { kvSubject, type SwarmNames, taskKeys } from "../../lib/subjects.ts";
import type { RequestEvents } from "./answer.ts";

/** Time to decision (seconds): from a quick yes to an hour's wait. */
const DECISION_SECONDS_BUCKETS = [1, 5, 15, 60, 300, 900, 1800, 3600, 7200];

export interface CoordinatorApprovals {
  read(id: string): Promise<Decision | undefined>;
  decided(request: string, task: string, d: Decision): void;
  expired(request: string, task: string, ids: string[]): void;
  stop(): void;
}

export interface ApprovalsOptions {
  nc: NatsConnection;
  kv: KV;
  names: SwarmNames;
  log: Logger;
  metrics: Metrics;
  events: RequestEvents;
  /** Decisions as read back (with signing on, only those sealed by a trusted approver or admin count). */
  decisions: RecordGuard;
  /** Each decision as it is stored (its parked sub-task is sent again). */
  onDecision(d: Decision): void;
  /** Sub-tasks parked now, for the pending gauge. */
  pending(): number;
}

export function coordinatorApprovals(o: ApprovalsOptions): CoordinatorApprovals {
  const total = o.metrics.counter("picoclaw_approvals_total", "Decided tool calls of requests this coordinator ran, by outcome.");
  const waited = o.metrics.histogram(
    "picoclaw_approval_wait_seconds",
    "Time from a tool call's request for approval to its decision.",
    DECISION_SECONDS_BUCKETS,
  );
  o.metrics.gauge("picoclaw_approvals_pending", "Sub-tasks parked now, waiting for a person to decide a tool call.", () => [
    { value: o.pending() },
  ]);
  const prefix = `${kvSubject(o.names.buckets.tasks, "")}`;
  const sub = o.nc.subscribe(kvSubject(o.names.buckets.tasks, taskKeys.decisionAll), {
    callback: (_err, m) => {
      const key = m.subject.slice(prefix.length);
      const entry = { operation: "PUT", value: m.data, string: () => new TextDecoder().decode(m.data) } as unknown as KvEntry;
      const r = o.decisions.read(key, entry, decisionSchema, { kind: "record", sealed: true });
      if (r.state === "ok" && key === taskKeys.decision(r.value.id)) o.onDecision(r.value);
    },
  });
  return {
    read: (id) => readDecision(o.kv, id, o.decisions).catch(() => undefined),
    decided(request, task, d) {
      total.inc({ outcome: d.outcome });
      waited.observe(Math.max(0, d.at - d.asked_at) / 1000);
      o.log.info(d.outcome === "approved" ? "Tool call approved" : "Tool call denied", {
        ...{ request, task, approval: d.id, tool: d.tool, by: d.by },
        note: d.note,
      });
      o.events.tell(request, {
        kind: "decision",
        task,
        decision: { id: d.id, tool: d.tool, outcome: d.outcome, by: d.by, at: d.at, note: d.note },
      });
    },
    expired(request, task, ids) {
      total.inc({ outcome: "timed_out" }, ids.length);
      o.log.info("Tool call approval timed out", { request, task, approvals: ids.join(",") });
      for (const id of ids)
        o.events.tell(request, { kind: "decision", task, decision: { id, tool: "", outcome: "timed_out", at: Date.now() } });
    },
    stop: () => sub.unsubscribe(),
  };
}
