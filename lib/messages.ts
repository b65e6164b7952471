// Wire messages of protocol v1: every one is JSON with `v: 1` and is parsed with its schema on receipt.
import { z } from "zod";
import { ID_PATTERN } from "./ids.ts";

/** Larger inbound messages are dropped before JSON parsing. */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;

const id = z.string().regex(ID_PATTERN);
/** Roles of swarm members. */
export const MEMBER_ROLES = ["coordinator", "worker", "specialist"] as const;
export type Role = (typeof MEMBER_ROLES)[number];
/** Processes that watch the swarm without joining it: the dashboard, the OpenAI-compatible gateway. */
export const OBSERVER_ROLES = ["dashboard", "gateway"] as const;
export type ObserverRole = (typeof OBSERVER_ROLES)[number];
/** Members, and the observers. */
export const NODE_ROLES = [...MEMBER_ROLES, ...OBSERVER_ROLES] as const;
export type NodeRole = (typeof NODE_ROLES)[number];
/** What a node says of itself. */
export const NODE_STATUSES = ["online", "busy", "draining"] as const;
/** How a peer is seen: what it says of itself, or what its silence says. */
export const PEER_STATUSES = [...NODE_STATUSES, "suspicious", "offline"] as const;
export type PeerStatus = (typeof PEER_STATUSES)[number];

const role = z.enum(NODE_ROLES);
const runningTaskSchema = z.object({
  request: id,
  task: id,
  capability: id,
  started_at: z.number().int().nonnegative(),
  /** Where its tool loop is: `thinking`, `exec "bun test"` (absent from nodes without tools). */
  step: z.string().max(200).optional(),
});
/** A sub-task running on a node now (in its heartbeats and on the dashboard). */
export type RunningTask = z.infer<typeof runningTaskSchema>;

/** Heartbeats carry at most this many subjects of dropped messages (the busiest ones). */
export const MAX_BAD_SUBJECTS_REPORTED = 20;
/** ...and at most this many models and capabilities in their token counts. */
export const MAX_TOKEN_KEYS_REPORTED = 32;

const count = z.number().int().nonnegative();
const tokenCounts = z
  .record(z.string().max(200), count)
  .refine((r) => Object.keys(r).length <= MAX_TOKEN_KEYS_REPORTED, { message: `at most ${MAX_TOKEN_KEYS_REPORTED} keys` });
/** Tokens of the LLM calls a node made since it started: in all, and by model and by capability. */
export const nodeTokensSchema = z.object({
  prompt: count,
  completion: count,
  by_model: tokenCounts,
  by_capability: tokenCounts,
});
export type NodeTokens = z.infer<typeof nodeTokensSchema>;

const temporalStatusSchema = z.object({
  address: z.string().max(300),
  /** Its workflow worker runs and the server answers. */
  polling: z.boolean(),
  /** Workflows of the swarm's task queue running and completed (from Temporal), when known. */
  running: z.number().int().nonnegative().optional(),
  completed: z.number().int().nonnegative().optional(),
});
/** What a coordinator in Temporal mode says of its workflow worker. */
export type TemporalStatus = z.infer<typeof temporalStatusSchema>;

/** What a node says about itself: in announcements, query replies and (in full) every heartbeat. */
export const nodeInfoSchema = z.object({
  v: z.literal(1),
  node: id,
  sid: id,
  role,
  capabilities: z.array(id).max(64),
  /** Tools the node offers its sub-tasks (built-in and `mcp_<server>_<tool>`), sorted. */
  tools: z
    .array(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/))
    .max(512)
    .optional(),
  max_concurrent: z.number().int().min(0).max(100_000),
  running: z.number().int().min(0).max(100_000),
  status: z.enum(NODE_STATUSES),
  version: z.string().max(64),
  started_at: z.number().int().nonnegative(),
  heartbeat_interval: z.number().int().positive().max(86_400_000),
  host: z.string().max(255).optional(),
  /** Sub-tasks running on the node now (at most max_concurrent). */
  tasks: z.array(runningTaskSchema).max(1000).optional(),
  /** Sub-tasks this node finished since it started. */
  done: z.number().int().nonnegative().optional(),
  failed: z.number().int().nonnegative().optional(),
  /** Coordinators in Temporal mode: their workflow worker. */
  temporal: temporalStatusSchema.optional(),
  /** Tokens of this node's LLM calls since it started. */
  tokens: nodeTokensSchema.optional(),
  /** Malformed messages this node dropped: total, and the subjects with the most. */
  bad: z
    .object({
      total: z.number().int().nonnegative(),
      by_subject: z
        .record(z.string().max(300), z.number().int().nonnegative())
        .refine((r) => Object.keys(r).length <= MAX_BAD_SUBJECTS_REPORTED, { message: `at most ${MAX_BAD_SUBJECTS_REPORTED} subjects` }),
      /** Of those, refused by a check (signature, trust, replay, a KV record's schema), by what was refused. */
      refused: z
        .record(z.string().max(32), z.number().int().nonnegative())
        .refine((r) => Object.keys(r).length <= 16, { message: "at most 16 kinds" })
        .optional(),
    })
    .optional(),
});

export type NodeInfo = z.infer<typeof nodeInfoSchema>;

export const announceSchema = z.object({
  v: z.literal(1),
  kind: z.enum(["join", "leave"]),
  info: nodeInfoSchema,
});

export const querySchema = z.object({ v: z.literal(1), from: id });

export const controlSchema = z.object({
  v: z.literal(1),
  action: z.enum(["ping", "drain", "shutdown"]),
});
export type Control = z.infer<typeof controlSchema>;

export const controlReplySchema = z.object({ v: z.literal(1), ok: z.boolean(), node: id, detail: z.string().max(1024) });
export type ControlReply = z.infer<typeof controlReplySchema>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encode(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Size check, JSON parse and schema check; never throws. */
export function decode<T>(schema: z.ZodType<T>, data: Uint8Array, maxBytes = MAX_CONTROL_MESSAGE_BYTES): Decoded<T> {
  if (data.length > maxBytes) return { ok: false, reason: `oversized (${data.length} > ${maxBytes} bytes)` };
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(data));
  } catch {
    return { ok: false, reason: "not JSON" };
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { ok: false, reason: `schema: ${issue?.path.join(".") || "(root)"} ${issue?.message ?? ""}`.trim() };
  }
  return { ok: true, value: parsed.data };
}
