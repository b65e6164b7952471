// Approvals: a tool call that tools.approval.required names waits for a person. The worker stores the
// call as pending (`approval.<id>` in the tasks bucket, created once) and parks its sub-task; a decision
// is a record of its own, `decision.<id>`, also created once: the server's create is the compare-and-set,
// so the first decision from any surface counts and a second is refused with the first one's outcome.
// Two keys, not one record updated: NATS permissions can then let workers ask and only approvers decide.
import { createHash } from "node:crypto";
import type { KV } from "nats";
import { z } from "zod";
import { ID_PATTERN } from "./ids.ts";
import { encode } from "./messages.ts";
import { plainRecords, type RecordGuard } from "./record-guard.ts";
import { taskKeys } from "./subjects.ts";
import { readRequest } from "./task-records.ts";

const id = z.string().regex(ID_PATTERN);
const epochMs = z.number().int().nonnegative();

/** A call waiting for a decision, as its worker stored it. */
export const pendingCallSchema = z.looseObject({
  v: z.literal(1),
  id,
  request: id,
  task: id,
  node: id,
  capability: id,
  /** The step number its result takes in the sub-task's loop. */
  step: z.number().int().positive(),
  call_id: z.string().max(200),
  tool: z.string().max(200),
  arguments: z.string().max(64 * 1024),
  /** What the model said with the call (its reason, when it gave one). */
  reason: z.string().max(2_000).optional(),
  created_at: epochMs,
  expires_at: epochMs,
  /** An approved call that began to run (set once: a worker dying mid-call leaves it interrupted, not run twice). */
  started: z.object({ node: id, at: epochMs }).optional(),
});
export type PendingCall = z.infer<typeof pendingCallSchema>;

export const DECISION_OUTCOMES = ["approved", "denied"] as const;

/** The one decision on a pending call. */
export const decisionSchema = z.looseObject({
  v: z.literal(1),
  id,
  request: id,
  task: id,
  tool: z.string().max(200),
  outcome: z.enum(DECISION_OUTCOMES),
  /** Who decided: the signing key's public key with signing on, else user@host. */
  by: z.string().max(200),
  at: epochMs,
  /** approve --note, or deny --reason. */
  note: z.string().max(2_000).optional(),
  /** When the call was asked for (time to decision). */
  asked_at: epochMs,
  /**
   * SHA-256 of the arguments the person was shown: the worker runs the call only when they are the
   * call's own (a pending record rewritten to show other arguments cannot get the real call approved).
   */
  args_sha256: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
});
export type Decision = z.infer<typeof decisionSchema>;

/** The part of a call's arguments a pending record keeps (and a person is shown). */
export const MAX_SHOWN_ARGUMENTS = 64 * 1024;

/** What a decision's `args_sha256` is computed over: the arguments as a pending record keeps them. */
export function argumentsDigest(args: string): string {
  return createHash("sha256").update(args.slice(0, MAX_SHOWN_ARGUMENTS)).digest("hex");
}

/**
 * Why `publicKey` would seal decisions nobody accepts (with signing on, workers take only those of
 * trusted_approvers or trusted_admins), when this process's config says so; undefined otherwise.
 */
export function untrustedApprover(
  security: { trusted_approvers: string[]; trusted_admins: string[] },
  publicKey: string,
): string | undefined {
  const trusted = [...security.trusted_approvers, ...security.trusted_admins];
  if (trusted.length === 0 || trusted.includes(publicKey)) return undefined;
  return `this key (${publicKey}) is not in swarm.security.trusted_approvers or trusted_admins, so workers would ignore the decision`;
}

/** Text from the model or a tool, safe to print on a terminal or a page: no control characters, cut. */
export function printable(text: string, max = 2_000): string {
  const clean = text.replace(/\p{Cc}/gu, (c) => (c === "\n" || c === "\t" ? c : "�"));
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

/** A call's approval id: the same for every attempt that reaches the same step (`ap-3f9a0c1b2d`). */
export function approvalId(request: string, task: string, step: number): string {
  return `ap-${createHash("sha256").update(`${request}/${task}/${step}`).digest("hex").slice(0, 10)}`;
}

/** Whether `tool` is named by one of `patterns` (`*` matches any run of characters). */
export function needsApproval(patterns: readonly string[], tool: string): boolean {
  return patterns.some((p) => new RegExp(`^${p.split("*").map(escapeRegExp).join(".*")}$`).test(tool));
}
const escapeRegExp = (s: string) => s.replace(/[.+?^${}()|[\]\\-]/g, "\\$&");

export async function readPending(kv: KV, approval: string, guard: RecordGuard = plainRecords): Promise<PendingCall | undefined> {
  const key = taskKeys.approval(approval);
  const r = guard.read(key, await kv.get(key), pendingCallSchema, { kind: "record" });
  return r.state === "ok" ? r.value : undefined;
}

/** The decision on `approval`, checked (with signing on, sealed by a trusted approver); undefined while there is none. */
export async function readDecision(kv: KV, approval: string, guard: RecordGuard = plainRecords): Promise<Decision | undefined> {
  const key = taskKeys.decision(approval);
  const r = guard.read(key, await kv.get(key), decisionSchema, { kind: "record", sealed: true });
  return r.state === "ok" ? r.value : undefined;
}

/** Stores the call as pending, once (asking again for the same step keeps the first record). */
export async function storePending(kv: KV, call: PendingCall, guard: RecordGuard = plainRecords): Promise<PendingCall> {
  const key = taskKeys.approval(call.id);
  try {
    await kv.create(key, encode(guard.seal(key, call)));
    return call;
  } catch (err) {
    const first = await readPending(kv, call.id, guard);
    if (first) return first;
    throw err;
  }
}

/**
 * Marks an approved call as started, once: false when another run started it already (that run may
 * have taken effect; the call is then reported interrupted, never run twice).
 */
export async function markStarted(kv: KV, call: PendingCall, node: string, guard: RecordGuard = plainRecords): Promise<boolean> {
  const key = taskKeys.approval(call.id);
  const entry = await kv.get(key);
  const r = guard.read(key, entry, pendingCallSchema, { kind: "record" });
  if (!entry || r.state !== "ok" || r.value.started) return false;
  const { seal: _old, ...plain } = r.value as PendingCall & { seal?: unknown };
  try {
    await kv.update(key, encode(guard.seal(key, { ...plain, started: { node, at: Date.now() } })), entry.revision);
    return true;
  } catch {
    return false; // someone else's update came first
  }
}

export type DecideResult = { ok: true; decision: Decision } | { ok: false; first: Decision | undefined };

/** Records `d` as the decision, unless there is one: then the first one is returned. */
export async function decide(kv: KV, d: Decision, seal: <T extends object>(key: string, r: T) => T = (_k, r) => r): Promise<DecideResult> {
  const key = taskKeys.decision(d.id);
  try {
    await kv.create(key, encode(seal(key, d)));
    return { ok: true, decision: d };
  } catch (err) {
    const entry = await kv.get(key);
    if (entry?.operation !== "PUT") throw err;
    return { ok: false, first: plainRecords.read(key, entry, decisionSchema).state === "ok" ? (entry.json() as Decision) : undefined };
  }
}

/** What the model gets for a call that was not approved. */
export function deniedContent(why: string): string {
  return `denied: ${why}`;
}

/** Why a pending call can no longer be decided (its time ran out, its request ended), or undefined. */
export async function whyClosed(kv: KV, call: PendingCall, now = Date.now()): Promise<string | undefined> {
  if (now >= call.expires_at) return `its approval timed out at ${new Date(call.expires_at).toISOString()} (tools.approval.timeout)`;
  const record = await readRequest(kv, call.request).catch(() => undefined);
  if (record?.status === "answered") return `its request ${call.request} has ended, which withdrew the call`;
  return undefined;
}

/** At most this many pending calls are read to list them. */
const MAX_LISTED = 1_000;

/** The calls still waiting: not decided, not timed out, their request not ended. Oldest first. */
export async function pendingCalls(kv: KV): Promise<PendingCall[]> {
  const keys: string[] = [];
  for await (const k of await kv.keys(taskKeys.approvalAll)) if (keys.push(k) >= MAX_LISTED) break;
  const now = Date.now();
  const calls = await Promise.all(
    keys.map(async (key) => {
      const call = await readPending(kv, key.slice("approval.".length));
      if (!call || (await readDecision(kv, call.id)) || (await whyClosed(kv, call, now))) return undefined;
      return call;
    }),
  );
  return calls.filter((c): c is PendingCall => c !== undefined).sort((a, b) => a.created_at - b.created_at);
}

export type DecideOutcome =
  | { kind: "decided"; decision: Decision; call: PendingCall }
  /** Decided before: the first decision (`first` undefined when its record is unreadable). */
  | { kind: "refused"; first?: Decision }
  | { kind: "unknown" }
  | { kind: "closed"; why: string };

/**
 * One decision on call `id` from any surface (CLI, web dashboard): refused when the call is unknown,
 * decided already, timed out or withdrawn; else created once (`seal`: with signing on).
 */
export async function decideCall(
  kv: KV,
  d: { id: string; outcome: Decision["outcome"]; by: string; note?: string },
  seal?: <T extends object>(key: string, r: T) => T,
): Promise<DecideOutcome> {
  const call = await readPending(kv, d.id);
  if (!call) return { kind: "unknown" };
  const first = await readDecision(kv, d.id);
  if (first) return { kind: "refused", first };
  const why = await whyClosed(kv, call);
  if (why) return { kind: "closed", why };
  const decision: Decision = {
    ...{ v: 1, id: d.id, request: call.request, task: call.task, tool: call.tool, outcome: d.outcome, by: d.by },
    at: Date.now(),
    note: d.note?.trim() || undefined,
    asked_at: call.created_at,
    args_sha256: argumentsDigest(call.arguments),
  };
  const r = await decide(kv, decision, seal);
  return r.ok ? { kind: "decided", decision, call } : { kind: "refused", first: r.first };
}
