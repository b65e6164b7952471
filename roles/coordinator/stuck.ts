// When a sub-task will never end by itself, judged from what is stored and what is online: no online
// node offers its capability (for node_timeout), or its deliveries are used up and the node on the last
// one fell silent. Used by the JetStream request run and by Temporal's sub-task activity alike.
import type { JetStreamManager } from "nats";
import { decode } from "../../lib/messages.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type TaskEvent, taskEventSchema } from "../../lib/task-messages.ts";

/** How late past its ack wait a running sub-task's last sign of life may be before its node counts as gone. */
const SILENCE_GRACE_MS = 5_000;

export interface LastEvent {
  kind: TaskEvent["kind"];
  attempt: number;
  at: number;
  /** kind "approval": the node that parked the sub-task and the calls it waits on. */
  node?: string;
  /** A stored event's sequence in EVENTS (undefined: heard live). */
  seq?: number;
  approvals?: TaskEvent["approvals"];
}

/** What is known of one open sub-task; `noNodeSince` is kept here between checks. */
export interface Watched {
  capability: string;
  /** Tools it needs: only a node with them all counts as one that can run it. */
  tools?: string[];
  /** Pinned to a node that is still its target (the coordinator re-routes it when that node goes). */
  pinned: boolean;
  last?: LastEvent;
  noNodeSince?: number;
}

export interface StuckLimits {
  onlineFor(capability: string, tools?: string[]): number;
  nodeTimeoutMs: number;
  maxDeliver: number;
  ackWaitMs: number;
}

/** Why `w` will never end by itself (and the attempt count to record), or undefined. Updates `w.noNodeSince`. */
export function stuck(w: Watched, l: StuckLimits, now: number): { error: string; attempts: number } | undefined {
  if (!w.pinned) {
    if (l.onlineFor(w.capability, w.tools) > 0) w.noNodeSince = undefined;
    else {
      w.noNodeSince ??= now;
      // Queued, or running on a node that is gone: either way nobody will finish it.
      if (now - w.noNodeSince >= l.nodeTimeoutMs) return { error: noNodeError(w, l), attempts: w.last?.attempt ?? 0 };
    }
  }
  const last = w.last;
  if (last && last.attempt >= l.maxDeliver && last.kind !== "completed" && now - last.at > l.ackWaitMs + SILENCE_GRACE_MS) {
    return {
      error: `gave up after ${l.maxDeliver} attempts without a result (the node running it stopped or crashed each time)`,
      attempts: last.attempt,
    };
  }
  return undefined;
}

/**
 * The last event stored for a sub-task (after a resume or a failover we have not heard it ourselves).
 * Progress is never stored, so a node may have shown signs of life since: silence counts from
 * `listeningSince` (when the caller began to hear live events) at the earliest.
 */
export async function lastStoredEvent(
  jsm: JetStreamManager,
  names: SwarmNames,
  request: string,
  task: string,
  listeningSince: number,
): Promise<LastEvent | undefined> {
  try {
    const m = await jsm.streams.getMessage(names.streams.events, { last_by_subj: names.taskEvents(request, task) });
    const d = decode(taskEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
    // When the stream stored it, not what it says of itself: a forged old timestamp cannot age it.
    if (!d.ok) return undefined;
    const { kind, attempt, node, approvals } = d.value;
    return { kind, attempt, at: Math.max(m.time.getTime(), listeningSince), node, approvals, seq: m.seq };
  } catch {
    return undefined; // no event yet (or not readable now): nothing to conclude
  }
}

/** "no online node offers security", or for a sub-task that needs tools, the tool nobody offers. */
function noNodeError(w: Watched, l: StuckLimits): string {
  if (!w.tools?.length || l.onlineFor(w.capability) === 0) return `no online node offers ${w.capability}`;
  const lacking = w.tools.filter((t) => l.onlineFor(w.capability, [t]) === 0);
  return `no online node offers tool ${(lacking.length ? lacking : w.tools).join(", ")}`;
}
