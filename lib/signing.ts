// Signing (swarm.security.signing): ed25519 nkeys over every message that causes or claims work.
//   sub-tasks   coordinator -> node: headers over subject, nonce, time, the JetStream message id and
//               payload; a node runs only sub-tasks signed by trusted_coordinators, within max_skew.
//               Replays: a copy must keep the signed message id, so the TASKS stream drops it as a
//               duplicate (its dedupe window is at least twice max_skew); after the window the time
//               check refuses it. Nothing is written per sub-task, so no member can claim a nonce ahead.
//   results     node -> coordinator: fields of the result record; trusted_workers.
//   answers     coordinator -> submit/watch: headers, as for sub-tasks; trusted_coordinators (no time
//               window: an answer stays valid in the EVENTS stream, and its subject names its request).
//   control     admin -> node (drain, shutdown): headers, time window and nonce; trusted_admins. The
//               subject names the node, so a copy sent to another node fails; the node itself keeps
//               the nonces it saw (in memory, for the time window) and refuses anything signed before
//               it started, so a copy sent again after a restart fails too.
//   records     request records in the tasks KV bucket, sealed by the coordinator that wrote them and
//               checked on resume, so a coordinator never re-signs a plan it did not make.
// What this does not protect against: anything
// inside the prompt itself (prompt injection), and a trusted key that is stolen. See docs/security.md.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { headers, type JsMsg, type MsgHdrs } from "nats";
import { fromPublic, fromSeed } from "nkeys.js";
import type { Config } from "./config.ts";
import { ConfigError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { TaskResult } from "./task-messages.ts";

const H_KEY = "Picoclaw-Key";
const H_NONCE = "Picoclaw-Nonce";
const H_TIME = "Picoclaw-Time";
const H_SIG = "Picoclaw-Sig";

export interface Signer {
  publicKey: string;
  sign(data: Uint8Array): Uint8Array;
}

/** This process's key from swarm.security.key_file (any role with signing on that signs something). */
export function loadKey(cfg: Config): Signer {
  const file = cfg.swarm.security.key_file;
  if (!file)
    throw new ConfigError(
      "swarm.security.key_file",
      "config",
      "a key file when swarm.security.signing is on (create one with `picoclaw keygen`)",
    );
  let seed: string;
  try {
    seed = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new ConfigError(
      "swarm.security.key_file",
      "config",
      "a readable nkey seed file (picoclaw keygen)",
      `${file} (${(err as Error).message})`,
    );
  }
  try {
    const kp = fromSeed(new TextEncoder().encode(seed));
    return { publicKey: kp.getPublicKey(), sign: (d) => kp.sign(d) };
  } catch {
    throw new ConfigError("swarm.security.key_file", "config", "an nkey seed (a line starting with S, from picoclaw keygen)", file);
  }
}

/**
 * With swarm.security.signing: this node's key. Coordinators must trust some workers' keys and workers
 * some coordinators' keys, or nothing could ever run.
 */
export function loadSigner(cfg: Config, trusts: "trusted_workers" | "trusted_coordinators", log: Logger): Signer | undefined {
  const s = cfg.swarm.security;
  if (!s.signing) return undefined;
  const signer = loadKey(cfg);
  if (s[trusts].length === 0) {
    const whom = trusts === "trusted_workers" ? "workers and specialists" : "coordinators";
    throw new ConfigError(`swarm.security.${trusts}`, "config", `the public keys of the ${whom} to trust when signing is on`, []);
  }
  log.info("Signing on", { public_key: signer.publicKey });
  return signer;
}

/** JetStream's dedupe header: signed on sub-tasks, so a copy that changes it no longer verifies. */
const H_MSG_ID = "Nats-Msg-Id";

function signedBytes(subject: string, nonce: string, time: string, payload: Uint8Array, msgId?: string): Uint8Array {
  // "msgid:" cannot start a payload (JSON), so a signature with a message id never verifies without one.
  const head = new TextEncoder().encode(`${subject}\n${nonce}\n${time}\n${msgId === undefined ? "" : `msgid:${msgId}\n`}`);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

/**
 * Headers that sign `payload` for `subject`, with a fresh nonce and the current time; with `msgId`, also
 * JetStream's message id (set here, and the same id must be passed to the publish).
 */
export function signMessage(signer: Signer, subject: string, payload: Uint8Array, msgId?: string): MsgHdrs {
  const h = headers();
  const nonce = randomBytes(12).toString("hex");
  const time = String(Date.now());
  h.set(H_KEY, signer.publicKey);
  h.set(H_NONCE, nonce);
  h.set(H_TIME, time);
  if (msgId !== undefined) h.set(H_MSG_ID, msgId);
  h.set(H_SIG, Buffer.from(signer.sign(signedBytes(subject, nonce, time, payload, msgId))).toString("base64"));
  return h;
}

/** A refusal is `transient` when the check itself could not be made now (too many control requests at once): try again later. */
export type Verdict = { ok: true } | { ok: false; reason: string; transient?: boolean };

/** A message's signature header ("" when unsigned): tells a signed event from an unsigned copy of it. */
export function signatureOf(h: MsgHdrs | undefined): string {
  return h?.get(H_SIG) ?? "";
}

/** The public key a message says it was signed with ("" when unsigned); not checked. */
export function signerOf(h: MsgHdrs | undefined): string {
  return h?.get(H_KEY) ?? "";
}

/**
 * Trusted key, valid signature and (unless `maxSkewMs` is undefined) the time window; the nonce and the
 * signing time are returned for a replay check. `withMsgId`: the signature covers JetStream's message id.
 */
export function checkSignature(
  subject: string,
  data: Uint8Array,
  h: MsgHdrs | undefined,
  trusted: ReadonlySet<string>,
  maxSkewMs: number | undefined,
  withMsgId = false,
): { ok: true; nonce: string; time: number } | { ok: false; reason: string } {
  const key = h?.get(H_KEY);
  const nonce = h?.get(H_NONCE);
  const time = h?.get(H_TIME);
  const sig = h?.get(H_SIG);
  if (!key || !nonce || !time || !sig) return { ok: false, reason: "unsigned" };
  const msgId = withMsgId ? h?.get(H_MSG_ID) : undefined;
  if (withMsgId && !msgId) return { ok: false, reason: "no message id (a copy of a signed sub-task?)" };
  if (!trusted.has(key)) return { ok: false, reason: `signed by untrusted key ${key.slice(0, 8)}…` };
  if (!/^[0-9a-f]{24}$/.test(nonce)) return { ok: false, reason: "malformed nonce" };
  if (maxSkewMs !== undefined) {
    const age = Date.now() - Number(time);
    if (!Number.isFinite(age) || Math.abs(age) > maxSkewMs) return { ok: false, reason: `outside the ${maxSkewMs}ms time window` };
  }
  try {
    if (!fromPublic(key).verify(signedBytes(subject, nonce, time, data, msgId), Buffer.from(sig, "base64"))) {
      return { ok: false, reason: "bad signature" };
    }
  } catch {
    return { ok: false, reason: "bad signature" };
  }
  return { ok: true, nonce, time: Number(time) };
}

/**
 * Checks a signed sub-task as delivered: trusted key, valid signature over its message id too, and the
 * time window. A copy published again must keep that id, which the TASKS stream drops as a duplicate
 * within its dedupe window (twice max_skew); a redelivery of the same stored message passes.
 */
export function verifyTaskMessage(msg: JsMsg, trusted: ReadonlySet<string>, maxSkewMs: number): Verdict {
  const sig = checkSignature(msg.subject, msg.data, msg.headers, trusted, maxSkewMs, true);
  if (!sig.ok) return sig;
  // nats.js trims header values, the server does not: `Nats-Msg-Id: <id> ` would be a new id to the
  // stream's dedupe yet verify here. The id must be on the wire exactly as signed, once.
  const raw = rawHeaderLines(msg)?.filter((l) => /^nats-msg-id:/i.test(l));
  if (raw === undefined) return { ok: false, reason: "message id could not be checked" };
  if (raw.length !== 1 || !/^Nats-Msg-Id: ?[^\s]+$/.test(raw[0]!)) return { ok: false, reason: "message id not as signed" };
  return { ok: true };
}

/** A delivered message's header lines as they came over the wire (nats.js keeps them; its parsed view trims). */
function rawHeaderLines(msg: JsMsg): string[] | undefined {
  const inner = (msg as unknown as { msg?: { _rdata?: Uint8Array; _msg?: { hdr?: number } } }).msg;
  const end = inner?._msg?.hdr;
  if (!inner?._rdata || end === undefined || end < 0) return undefined;
  return new TextDecoder().decode(inner._rdata.subarray(0, end)).split("\r\n");
}

/**
 * The control requests one node has accepted: a nonce is refused the second time, and so is anything
 * signed before the node started (a copy of a request to its previous run). Kept for twice the time
 * window, at most `cap` at once: when full, a request is refused for now rather than forgotten.
 */
export class ControlReplayGuard {
  private readonly seen = new Map<string, number>();
  constructor(
    private readonly startedAt = Date.now(),
    private readonly cap = 10_000,
  ) {}

  check(nonce: string, signedAt: number, maxSkewMs: number, now = Date.now()): Verdict {
    if (signedAt < this.startedAt) return { ok: false, reason: "signed before this node started (a replay?)" };
    for (const [n, until] of this.seen) {
      if (until > now) break; // insertion order is expiry order (same window for all)
      this.seen.delete(n);
    }
    if (this.seen.has(nonce)) return { ok: false, reason: "replay (nonce already used)" };
    if (this.seen.size >= this.cap) return { ok: false, transient: true, reason: "too many control requests at once" };
    this.seen.set(nonce, now + 2 * maxSkewMs);
    return { ok: true };
  }
}

/**
 * A control request (drain, shutdown) on a core subject: signed by a trusted admin key over its subject
 * (which names the node), within the time window, and never seen by this node before.
 */
export function verifyControl(
  subject: string,
  data: Uint8Array,
  h: MsgHdrs | undefined,
  trusted: ReadonlySet<string>,
  maxSkewMs: number,
  guard: ControlReplayGuard,
): Verdict {
  const sig = checkSignature(subject, data, h, trusted, maxSkewMs);
  if (!sig.ok) return sig;
  return guard.check(sig.nonce, sig.time, maxSkewMs);
}

/**
 * An answer event as stored in the EVENTS stream: signed by a trusted coordinator over its subject
 * (which names the request) and payload. No time window and no nonce: `watch` may read it hours later,
 * and a copy of the same answer on the same subject says nothing new.
 */
export function verifyAnswer(subject: string, data: Uint8Array, h: MsgHdrs | undefined, trusted: ReadonlySet<string>): Verdict {
  const sig = checkSignature(subject, data, h, trusted, undefined);
  return sig.ok ? { ok: true } : sig;
}

/** With signing on: the coordinator keys whose answers `submit` and `watch` accept. */
export function trustedAnswerKeys(cfg: Config): Set<string> | undefined {
  const s = cfg.swarm.security;
  if (!s.signing) return undefined;
  if (s.trusted_coordinators.length === 0) {
    throw new ConfigError(
      "swarm.security.trusted_coordinators",
      "config",
      "the public keys of the coordinators whose answers to accept when signing is on",
      [],
    );
  }
  return new Set(s.trusted_coordinators);
}

/** Keys in a fixed order at every depth, so a record signed as written verifies as read back. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function recordBytes(key: string, record: Record<string, unknown>): Uint8Array {
  const { seal: _seal, ...rest } = record;
  return new TextEncoder().encode(`record\n${key}\n${canonicalJson(rest)}`);
}

/** A KV record's seal: who wrote it, and a signature over its key and content. */
export interface Seal {
  signer: string;
  signature: string;
}

/** `record` with a seal over its key and content (the key binds it: a record copied to another key fails). */
export function sealRecord<T extends object>(signer: Signer, key: string, record: T): T & { seal: Seal } {
  const sig = signer.sign(recordBytes(key, record as Record<string, unknown>));
  return { ...record, seal: { signer: signer.publicKey, signature: Buffer.from(sig).toString("base64") } };
}

/** Checks a record read from KV under `key` (as parsed from JSON, before any schema defaults). */
export function verifyRecord(key: string, record: Record<string, unknown>, trusted: ReadonlySet<string>): Verdict {
  const seal = record.seal as Partial<Seal> | undefined;
  if (!seal || typeof seal.signer !== "string" || typeof seal.signature !== "string") return { ok: false, reason: "unsealed record" };
  if (!trusted.has(seal.signer)) return { ok: false, reason: `record sealed by untrusted key ${seal.signer.slice(0, 8)}…` };
  try {
    return fromPublic(seal.signer).verify(recordBytes(key, record), Buffer.from(seal.signature, "base64"))
      ? { ok: true }
      : { ok: false, reason: "bad record seal" };
  } catch {
    return { ok: false, reason: "bad record seal" };
  }
}

/**
 * What a result's signature covers: the whole record in canonical JSON (every field but the signature
 * itself), so usage, errors, model, capability and truncation cannot be changed after signing either.
 */
function resultDigest(r: TaskResult): Uint8Array {
  const { signer, signature: _signature, ...rest } = r;
  return new TextEncoder().encode(`result\n${canonicalJson({ ...rest, signer })}`);
}

export function signResult(signer: Signer, r: TaskResult): TaskResult {
  const signed = { ...r, signer: signer.publicKey };
  return { ...signed, signature: Buffer.from(signer.sign(resultDigest(signed))).toString("base64") };
}

export function verifyResult(r: TaskResult, trusted: Set<string>): Verdict {
  if (!r.signer || !r.signature) return { ok: false, reason: "unsigned result" };
  if (!trusted.has(r.signer)) return { ok: false, reason: `result signed by untrusted key ${r.signer.slice(0, 8)}…` };
  try {
    return fromPublic(r.signer).verify(resultDigest(r), Buffer.from(r.signature, "base64"))
      ? { ok: true }
      : { ok: false, reason: "bad result signature" };
  } catch {
    return { ok: false, reason: "bad result signature" };
  }
}
