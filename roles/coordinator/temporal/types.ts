// What the request workflow and its activities pass each other. Small on purpose: prompts, results and
// answers stay in NATS (the request record, result records, the answers store), so a request's Temporal
// history holds ids, states and sizes, never 2 MiB of text.

import type { RequestMsg } from "../../../lib/task-messages.ts";

/** The workflow's input: the submitted request (workflow id = request id) and its deadline. */
export interface RequestInput {
  msg: RequestMsg;
  /** Epoch ms: the request ends (answered as failed if need be) by then. */
  deadline_at: number;
}

/** A sub-task as the workflow schedules it: its place in the DAG, not its prompt. */
export interface PlannedTask {
  id: string;
  capability: string;
  depends_on: string[];
  required: boolean;
}

export type Planned = { tasks: PlannedTask[] } | { rejected: string };

/** How a sub-task ended, as far as the workflow needs to know (the result itself is recorded in KV). */
export interface SubTaskEnd {
  id: string;
  status: "completed" | "failed" | "skipped";
  /** Why it was skipped (a dependency failed, the deadline passed). */
  reason?: string;
}

/**
 * A sub-task whose calls wait for a person: its node acked its message, and the workflow waits for the
 * `decision` signal (or the calls' time-out), then runs the sub-task again with `resume`.
 */
export interface SubTaskParked {
  id: string;
  status: "parked";
  approvals: string[];
  tools: string[];
  /** The node that asked: it gets the sub-task back when it is online (its workspace is there). */
  node: string;
  expires_at: number;
  /** The stored `approval` event's sequence in EVENTS: which parking this is (each is answered once). */
  parking: number;
}

/** A decision as the coordinator signals it to the request's workflow. */
export interface DecisionSignal {
  id: string;
  outcome: string;
}

export interface AnswerInput {
  request: string;
  ends: SubTaskEnd[];
  /** The deadline ended the request. */
  expired: boolean;
}

export interface Answered {
  status: "completed" | "partial" | "failed" | "rejected";
}

/** The activities the request workflow calls (implemented in activities.ts, on every coordinator). */
export interface RequestActivities {
  plan(input: RequestInput): Promise<Planned>;
  /** Runs one sub-task to its end, or until a node parks it (`resume`: again after that, `cause` the decision id or `<id>.expired`). */
  runSubTask(input: {
    request: string;
    task: string;
    deadline_at: number;
    resume?: { cause: string; parked: SubTaskParked };
  }): Promise<SubTaskEnd | SubTaskParked>;
  /** The first stored decision on any of `ids` (a signal missed while no coordinator led). */
  decided(input: { ids: string[] }): Promise<DecisionSignal | undefined>;
  answer(input: AnswerInput): Promise<Answered>;
  reject(input: { request: string; error: string }): Promise<Answered>;
}
