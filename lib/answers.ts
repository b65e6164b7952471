// Answers of any size: one that fits comfortably in a message travels in the answer event; a larger one
// is stored in the swarm's answers object store (chunked, like any JetStream object) and the event
// carries its start and a reference that `submit`, `watch` and the gateway read the whole from.
import { createHash } from "node:crypto";
import { type NatsConnection, nanos, StorageType } from "nats";
import type { Config } from "./config.ts";
import type { SwarmNames } from "./subjects.ts";
import type { RequestEventBody } from "./task-messages.ts";

/** Answers up to this size travel inline (NATS' default max payload is 1 MiB; the event has more fields). */
export const MAX_INLINE_ANSWER_BYTES = 256 * 1024;
/** How much of a stored answer the event still carries, for followers that show a preview. */
const PREVIEW_BYTES = 16 * 1024;

function answerStore(nc: NatsConnection, names: SwarmNames, cfg?: Config) {
  const opts = { storage: StorageType.File, ttl: cfg ? nanos(cfg.swarm.tasks.retention) : undefined };
  // nats.js v2 reads `replicas` into num_replicas but also copies every option into the stream config,
  // and nats-server 2.11+ refuses a config with a "replicas" field ("unknown field"): not enumerable,
  // it is read and not copied.
  Object.defineProperty(opts, "replicas", { value: cfg?.swarm.nats.replicas ?? 1, enumerable: false });
  return nc.jetstream().views.os(names.buckets.answers, opts);
}

/** The answer as it goes out: unchanged when it fits, else stored with a preview and a reference. */
export async function storeLargeAnswer(
  nc: NatsConnection,
  names: SwarmNames,
  cfg: Config,
  request: string,
  ev: RequestEventBody,
): Promise<RequestEventBody> {
  const text = ev.answer ?? "";
  const bytes = Buffer.from(text);
  if (bytes.length <= MAX_INLINE_ANSWER_BYTES) return ev;
  const os = await answerStore(nc, names, cfg);
  await os.putBlob({ name: request }, bytes);
  const preview = bytes
    .subarray(0, PREVIEW_BYTES)
    .toString()
    .replace(/\uFFFD$/, "");
  return {
    ...ev,
    answer: `${preview}\n\n[… the whole answer is ${bytes.length} bytes; it is stored as ${names.buckets.answers}/${request}]`,
    answer_ref: { name: request, bytes: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex") },
  };
}

/** The whole answer of an answer event: its text, or the stored object it refers to (checked). */
export async function fullAnswer(nc: NatsConnection, names: SwarmNames, ev: RequestEventBody): Promise<string> {
  if (!ev.answer_ref) return ev.answer ?? "";
  const os = await answerStore(nc, names);
  const data = await os.getBlob(ev.answer_ref.name);
  if (!data) throw new Error(`the stored answer ${names.buckets.answers}/${ev.answer_ref.name} is gone (kept for swarm.tasks.retention)`);
  if (createHash("sha256").update(data).digest("hex") !== ev.answer_ref.sha256) {
    throw new Error(`the stored answer ${names.buckets.answers}/${ev.answer_ref.name} does not match its digest`);
  }
  return Buffer.from(data).toString();
}
