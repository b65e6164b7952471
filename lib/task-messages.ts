// Wire messages of the task pipeline (protocol v1): requests, sub-tasks, their events and results.
import { z } from "zod";
import { ID_PATTERN } from "./ids.ts";

const id = z.string().regex(ID_PATTERN);
const usage = z.object({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  total_tokens: z.number().int().nonnegative(),
});

/**
 * One row of a request's token breakdown: the LLM calls one node made for one capability with one
 * model. The coordinator's own calls are under "(planning)" and "(synthesis)" (no capability has
 * parentheses, so they never mix with a sub-task's).
 */
export const usageRowSchema = usage.extend({
  node: id,
  capability: z.string().max(80),
  model: z.string().max(200),
});
export type UsageRow = z.infer<typeof usageRowSchema>;

/** Larger JetStream payloads than this are refused on receipt (NATS' own default limit is 1 MiB). */
export const MAX_PIPELINE_MESSAGE_BYTES = 1024 * 1024;

/** `picoclaw submit`: one user request, with an optional explicit plan (validated by the coordinator). */
export const requestSchema = z.object({
  v: z.literal(1),
  request: id,
  text: z.string().max(512 * 1024),
  /** Raw plan (YAML/JSON already parsed); validated against the swarm by the coordinator. */
  plan: z.unknown().optional(),
  capabilities: z.array(id).max(64).optional(),
  submitted_at: z.number().int().nonnegative(),
  /** `submit --timeout`: this request's own deadline, when shorter than swarm.tasks.request_timeout. */
  timeout_ms: z.number().int().positive().optional(),
});
export type RequestMsg = z.infer<typeof requestSchema>;

/**
 * A dependency's result: inline, or by reference (`digest` without `result`) when the inputs together
 * would not fit one message; the node then reads the recorded result and checks its SHA-256.
 */
export const taskInputSchema = z.object({
  task: id,
  title: z.string().max(200),
  result: z.string().optional(),
  digest: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
});
export type TaskInput = z.infer<typeof taskInputSchema>;

/** How a call that needed approval was decided (the audit trail of answers and steps). */
export const approvalNoteSchema = z.object({
  id,
  outcome: z.enum(["approved", "denied", "timed_out"]),
  by: z.string().max(200).optional(),
  at: z.number().int().nonnegative().optional(),
  note: z.string().max(2_000).optional(),
});
export type ApprovalNote = z.infer<typeof approvalNoteSchema>;

/** One tool call of a sub-task's loop, as answers and dashboards list it. */
export const toolCallSummarySchema = z.object({
  step: z.number().int().positive(),
  tool: z.string().max(200),
  /** The first argument in a few words (`"git diff"`). */
  args: z.string().max(200),
  outcome: z.string().max(40),
  duration_ms: z.number().int().nonnegative(),
  node: z.string().max(64),
  approval: approvalNoteSchema.optional(),
});
export type ToolCallSummary = z.infer<typeof toolCallSummarySchema>;

/** A call's arguments in a few words for progress lines: the first string value, quoted and cut. */
export function briefArgs(raw: string): string {
  try {
    const v: unknown = JSON.parse(raw);
    const first = v && typeof v === "object" ? Object.values(v).find((x) => typeof x === "string") : undefined;
    if (typeof first === "string") {
      const one = first.replace(/\s+/g, " ").trim();
      return JSON.stringify(one.length > 60 ? `${one.slice(0, 57)}...` : one);
    }
  } catch {
    // Not JSON: shown cut as it is.
  }
  return raw.length > 60 ? `${raw.slice(0, 57)}...` : raw;
}

/** Tool names as plans and heartbeats carry them (`exec`, `mcp_github_search`). */
export const toolNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);

/** One sub-task on `task.queue.<cap>.<prio>` or `task.direct.<node>`. */
export const taskSchema = z.object({
  v: z.literal(1),
  request: id,
  task: id,
  title: z.string().max(200),
  capability: id,
  priority: z.number().int().min(0).max(3),
  prompt: z.string(),
  /** Results of the sub-tasks this one depends on. */
  inputs: z.array(taskInputSchema).max(64),
  timeout_ms: z.number().int().positive(),
  coordinator: id,
  /** Epoch ms: the request's deadline. A node does not start the sub-task after it. */
  deadline_at: z.number().int().nonnegative().optional(),
  /** Tools the sub-task needs: it is routed only to a node that has them all. */
  tools: z.array(toolNameSchema).max(64).optional(),
  /** Sent again after a decision on one of its calls: its loop resumes from the recorded steps. */
  resume: z.boolean().optional(),
});
export type TaskMsg = z.infer<typeof taskSchema>;

/** The one recorded outcome of a sub-task (KV, created once: repeats are ignored). */
export const taskResultSchema = z.object({
  v: z.literal(1),
  request: id,
  task: id,
  status: z.enum(["completed", "failed"]),
  node: id,
  capability: id,
  text: z.string().optional(),
  error: z.string().optional(),
  /** Every failed attempt's error, oldest first. */
  errors: z.array(z.string()).default([]),
  attempts: z.number().int().positive(),
  started_at: z.number().int().nonnegative(),
  finished_at: z.number().int().nonnegative(),
  usage,
  llm: z.string().max(300),
  /** The model that answered (absent in results of older nodes). */
  model: z.string().max(200).optional(),
  truncated: z.boolean().default(false),
  /** The tool calls of the sub-task's loop, in order (absent: no tool was called). */
  tool_calls: z.array(toolCallSummarySchema).max(1000).optional(),
  /** Set when max_tool_iterations ended the loop before the model answered. */
  stopped: z.string().max(200).optional(),
  /** With swarm.security.signing: the node's public key and its signature over the result. */
  signer: z.string().max(64).optional(),
  signature: z.string().max(200).optional(),
});
export type TaskResult = z.infer<typeof taskResultSchema>;

export const TASK_EVENT_KINDS = ["started", "progress", "completed", "failed", "retrying", "duplicate", "tool", "approval"] as const;

/** kind "approval": a call of the sub-task waits for a person; the sub-task is parked (no worker holds it). */
export const pendingNoticeSchema = z.object({
  id,
  tool: z.string().max(200),
  args: z.string().max(200),
  reason: z.string().max(2_000).optional(),
  expires_at: z.number().int().nonnegative(),
});
export type PendingNotice = z.infer<typeof pendingNoticeSchema>;

/** On `event.task.<request>.<task>`: what a node is doing with a sub-task. */
export const taskEventSchema = z.object({
  v: z.literal(1),
  request: id,
  task: id,
  kind: z.enum(TASK_EVENT_KINDS),
  node: id,
  capability: id,
  at: z.number().int().nonnegative(),
  attempt: z.number().int().positive(),
  elapsed_ms: z.number().int().nonnegative().optional(),
  tokens: z.number().int().nonnegative().optional(),
  error: z.string().max(4096).optional(),
  retry_in_ms: z.number().int().nonnegative().optional(),
  /** kind "tool": a tool call of the sub-task's loop ended (its step number, tool, first argument, outcome; elapsed_ms its duration). */
  step: z.number().int().positive().optional(),
  tool: z.string().max(200).optional(),
  args: z.string().max(200).optional(),
  outcome: z.string().max(40).optional(),
  /**
   * kinds "completed" and "failed": the result exactly as recorded in KV, sent only after the record
   * was created, so the coordinator need not read it back (it still reads KV when reconciling).
   */
  result: taskResultSchema.optional(),
  /** kind "approval": the calls waiting (one event lists every call of the turn that waits). */
  approvals: z.array(pendingNoticeSchema).max(64).optional(),
});
export type TaskEvent = z.infer<typeof taskEventSchema>;

export const planSummarySchema = z.object({
  planner: z.enum(["explicit", "llm", "heuristic"]),
  note: z.string().optional(),
  /** Tokens the LLM planner used (counted in the request's usage). */
  usage: usage.optional(),
  tasks: z.array(
    z.object({
      id: id,
      title: z.string(),
      capability: id,
      priority: z.number().int(),
      depends_on: z.array(id),
      required: z.boolean(),
    }),
  ),
});
export type PlanSummary = z.infer<typeof planSummarySchema>;

export const REQUEST_EVENT_KINDS = ["accepted", "planned", "assigned", "answer_delta", "answer", "failed", "decision"] as const;

/** An `answer_delta` carries at most this much text (the coordinator sends more often than that). */
export const MAX_ANSWER_DELTA_CHARS = 16 * 1024;

/** One sub-task's end, as the answer reports it. */
export const taskEndSchema = z.object({
  id,
  status: z.enum(["completed", "failed", "skipped", "unfinished"]),
  node: id.optional(),
  tokens: z.number().int().nonnegative().optional(),
  started_at: z.number().int().nonnegative().optional(),
  finished_at: z.number().int().nonnegative().optional(),
});
export type TaskEnd = z.infer<typeof taskEndSchema>;

/** On `event.request.<request>`: the request's progress and, at the end, its answer. */
export const requestEventSchema = z.object({
  v: z.literal(1),
  request: id,
  kind: z.enum(REQUEST_EVENT_KINDS),
  at: z.number().int().nonnegative(),
  coordinator: id,
  plan: planSummarySchema.optional(),
  /** kind "assigned" (older coordinators; now the task's `started` event says it): which node took which sub-task. */
  task: id.optional(),
  node: id.optional(),
  answer: z.string().optional(),
  /** An answer too large for one message: `answer` holds its start, the whole is in the answers object store. */
  answer_ref: z.object({ name: id, bytes: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }).optional(),
  /**
   * kind "answer_delta": the next piece of the answer as the LLM merge produces it, numbered from 0
   * (`seq`). Best effort: the `answer` event that follows always has the whole text (or its reference).
   */
  delta: z.string().max(MAX_ANSWER_DELTA_CHARS).optional(),
  seq: z.number().int().nonnegative().optional(),
  error: z.string().optional(),
  status: z.enum(["completed", "partial", "failed"]).optional(),
  /** kind "answer": tokens of every LLM call of the request (planning, sub-tasks, synthesis)... */
  usage: usage.optional(),
  /** ...and the same by node, capability and model. */
  usage_by: z.array(usageRowSchema).max(512).optional(),
  duration_ms: z.number().int().nonnegative().optional(),
  /**
   * kind "answer": how each sub-task ended. Task events are live only, so a follower that attaches
   * after the fact (`watch`) learns each sub-task's end from here.
   */
  tasks: z.array(taskEndSchema).max(512).optional(),
  /** kind "decision": a pending tool call of sub-task `task` was decided (who, when, what, note). */
  decision: approvalNoteSchema.extend({ tool: z.string().max(200) }).optional(),
});
export type RequestEvent = z.infer<typeof requestEventSchema>;
/** A request event as its coordinator composes it (the envelope fields are added when it is sent). */
export type RequestEventBody = Omit<RequestEvent, "v" | "request" | "at" | "coordinator">;

// ---- Records in the tasks KV bucket (read back with these schemas like any message) ----

const storedPlanTaskSchema = z.object({
  id,
  capability: id,
  prompt: z.string(),
  depends_on: z.array(id).max(64),
  priority: z.number().int().min(0).max(3),
  timeout_ms: z.number().positive().optional(),
  required: z.boolean(),
  title: z.string().max(200).optional(),
  node: id.optional(),
  tools: z.array(toolNameSchema).max(64).optional(),
});

/** A KV record's seal (swarm.security.signing): who wrote it and a signature over its key and content. */
export const sealSchema = z.object({ signer: z.string().regex(/^[A-Z2-7]{56}$/), signature: z.string().max(200) });

/**
 * `request.<id>`: the coordinator's checkpoint (plan, summary, answer). Loose: fields a newer coordinator
 * adds are kept, not stripped, so the seal over the record still verifies.
 */
export const requestRecordSchema = z.looseObject({
  v: z.literal(1),
  status: z.enum(["running", "answered"]),
  coordinator: id,
  lease: z.number().int().nonnegative(),
  started_at: z.number().int().nonnegative(),
  deadline_at: z.number().int().nonnegative().optional(),
  queued: z.record(id, z.number().int().nonnegative()).optional(),
  resumed: z.record(id, z.number().int().nonnegative()).optional(),
  text: z
    .string()
    .max(512 * 1024)
    .optional(),
  plan: z.object({ tasks: z.array(storedPlanTaskSchema).max(1024), synthesize: z.boolean() }).optional(),
  summary: planSummarySchema.optional(),
  answer: requestEventSchema.omit({ v: true, request: true, at: true, coordinator: true }).optional(),
  seal: sealSchema.optional(),
});

/** `errors.<request>.<task>`: every failed attempt's error, oldest first (at most 20 kept). */
export const attemptErrorsSchema = z.array(z.string().max(4096)).max(100);

/** `failures.<request>`: how often handling the request failed. */
export const failureCountSchema = z.number().int().nonnegative().max(1_000_000);

/** `dead.<request>`: a request given up after repeated failures (`picoclaw requests --failed`). */
export const deadLetterSchema = z.object({
  v: z.literal(1),
  request: id,
  text: z.string().max(4096),
  error: z.string().max(65_536),
  failures: z.number().int().nonnegative(),
  at: z.number().int().nonnegative(),
  coordinator: id,
});
