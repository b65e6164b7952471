// Signed sub-tasks and results (swarm.security.signing): ed25519 nkeys. A coordinator signs each
// sub-task it queues (subject, nonce and time included); a node runs only sub-tasks signed by a key in
// trusted_coordinators, within max_skew, whose nonce no other message has used (a replay). The node
// signs its result; the coordinator accepts only results signed by a key in trusted_workers.
// What this does not protect against: anything inside the prompt itself (prompt injection), and a
// trusted key that is stolen. See docs/security.md.
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { headers, type JsMsg, type KV, type MsgHdrs } from "nats";
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

/**
 * With swarm.security.signing: this node's key. Coordinators must trust some workers' keys and workers
 * some coordinators' keys, or nothing could ever run.
 */
export function loadSigner(cfg: Config, trusts: "trusted_workers" | "trusted_coordinators", log: Logger): Signer | undefined {
  const s = cfg.swarm.security;
  if (!s.signing) return undefined;
  let seed: string;
  try {
    seed = readFileSync(s.key_file!, "utf8").trim();
  } catch (err) {
    throw new ConfigError(
      "swarm.security.key_file",
      "config",
      "a readable nkey seed file (picoclaw keygen)",
      `${s.key_file} (${(err as Error).message})`,
    );
  }
  let signer: Signer;
  try {
    const kp = fromSeed(new TextEncoder().encode(seed));
    signer = { publicKey: kp.getPublicKey(), sign: (d) => kp.sign(d) };
  } catch {
    throw new ConfigError("swarm.security.key_file", "config", "an nkey seed (a line starting with S, from picoclaw keygen)", s.key_file);
  }
  if (s[trusts].length === 0) {
    const whom = trusts === "trusted_workers" ? "workers and specialists" : "coordinators";
    throw new ConfigError(`swarm.security.${trusts}`, "config", `the public keys of the ${whom} to trust when signing is on`, []);
  }
  log.info("Signing on", { public_key: signer.publicKey });
  return signer;
}

function signedBytes(subject: string, nonce: string, time: string, payload: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(`${subject}\n${nonce}\n${time}\n`);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

/** Headers that sign `payload` for `subject`, with a fresh nonce and the current time. */
export function signMessage(signer: Signer, subject: string, payload: Uint8Array): MsgHdrs {
  const h = headers();
  const nonce = randomBytes(12).toString("hex");
  const time = String(Date.now());
  h.set(H_KEY, signer.publicKey);
  h.set(H_NONCE, nonce);
  h.set(H_TIME, time);
  h.set(H_SIG, Buffer.from(signer.sign(signedBytes(subject, nonce, time, payload))).toString("base64"));
  return h;
}

export type Verdict = { ok: true } | { ok: false; reason: string };

/**
 * Checks a signed JetStream message: trusted key, valid signature, time window, and a nonce not used
 * by another stored message (kept in KV so a replay to any node is caught; a redelivery of the same
 * stored message is not a replay).
 */
export async function verifyTaskMessage(msg: JsMsg, trusted: Set<string>, maxSkewMs: number, kv: KV): Promise<Verdict> {
  const h = msg.headers;
  const key = h?.get(H_KEY);
  const nonce = h?.get(H_NONCE);
  const time = h?.get(H_TIME);
  const sig = h?.get(H_SIG);
  if (!key || !nonce || !time || !sig) return { ok: false, reason: "unsigned" };
  if (!trusted.has(key)) return { ok: false, reason: `signed by untrusted key ${key.slice(0, 8)}…` };
  if (!/^[0-9a-f]{24}$/.test(nonce)) return { ok: false, reason: "malformed nonce" };
  const age = Date.now() - Number(time);
  if (!Number.isFinite(age) || Math.abs(age) > maxSkewMs) return { ok: false, reason: `outside the ${maxSkewMs}ms time window` };
  try {
    if (!fromPublic(key).verify(signedBytes(msg.subject, nonce, time, msg.data), Buffer.from(sig, "base64"))) {
      return { ok: false, reason: "bad signature" };
    }
  } catch {
    return { ok: false, reason: "bad signature" };
  }
  const seq = String(msg.info.streamSequence);
  try {
    await kv.create(`nonce.${nonce}`, new TextEncoder().encode(seq));
  } catch {
    const seen = await kv.get(`nonce.${nonce}`).catch(() => null);
    if (seen && seen.operation === "PUT" && seen.string() !== seq) return { ok: false, reason: "replay (nonce already used)" };
  }
  return { ok: true };
}

function resultDigest(r: TaskResult): Uint8Array {
  const body = createHash("sha256")
    .update(r.text ?? r.error ?? "")
    .digest("hex");
  return new TextEncoder().encode(`${r.request}\n${r.task}\n${r.status}\n${r.node}\n${r.attempts}\n${body}`);
}

export function signResult(signer: Signer, r: TaskResult): TaskResult {
  return { ...r, signer: signer.publicKey, signature: Buffer.from(signer.sign(resultDigest(r))).toString("base64") };
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
