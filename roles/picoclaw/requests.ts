// `picoclaw requests`: the requests the swarm keeps, newest first, one a line with its status: queued
// (waiting for a coordinator), running, completed, partial, failed, rejected; a dead letter (given up
// after handling it failed again and again, and answered as failed) is marked as such. `--failed`: every
// one that ended failed: answered as failed, rejected, and the dead letters. Requests are kept as long
// as swarm.tasks.retention keeps their records. Also the look-up `watch` makes before it waits.
import { consumerOpts, type JetStreamManager, type KV, type MsgRequest, type NatsConnection } from "nats";
import type { Config } from "../../lib/config.ts";
import type { Logger } from "../../lib/log.ts";
import { decode } from "../../lib/messages.ts";
import { isStreamNotFound, isTransientNatsError } from "../../lib/nats-connection.ts";
import { openTasksKv } from "../../lib/streams.ts";
import { kvSubject, type SwarmNames, taskKeys } from "../../lib/subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type RequestMsg, requestRecordSchema, requestSchema } from "../../lib/task-messages.ts";
import { listDeadLetters, type RequestRecord } from "../../lib/task-records.ts";
import { openClient } from "./client.ts";

export type RequestStatus = "queued" | "running" | "completed" | "partial" | "failed" | "rejected";

/** One request as `requests` lists it (and prints with --json). */
export interface RequestRow {
  request: string;
  status: RequestStatus;
  /** Epoch ms it was submitted (queued) or first taken by a coordinator. */
  at: number;
  /** Kept as a dead letter: the swarm gave up on it after `failures` failed attempts to handle it. */
  dead_letter?: boolean;
  failures?: number;
  error?: string;
  /** The start of its text, where the swarm keeps it (queued requests, dead letters, Temporal mode). */
  text?: string;
  /** Sub-tasks of its plan. */
  tasks?: number;
  coordinator?: string;
}

/** Plain `requests` shows this many, newest first (--json lists every one). */
export const LIST_LIMIT = 50;
/** At most this many queued requests are read to list them or to look for one. */
const MAX_QUEUE_READ = 1_000;
/** Reading the records stops when none arrives for this long (an ordered consumer that lost its way). */
const RECORDS_IDLE_MS = 5_000;

export async function runRequests(cfg: Config, log: Logger, o: { failed: boolean; json: boolean }): Promise<number> {
  const client = await openClient(cfg, log, "picoclaw-requests");
  const { hid } = client.identity;
  try {
    const nc = client.link.nc;
    const kv = await openTasksKv(nc, client.names, cfg);
    // One after the other: a read awaited inside another key listing of the same bucket can end it early.
    const dead = await listDeadLetters(kv);
    const records = await readRequestRecords(nc, kv);
    // Records under dead.* or request.* that do not parse (written by hand, or by something else): said, not hidden.
    for (const u of dead.unreadable) console.error(`picoclaw: ${u.key} is not a readable dead letter (${u.reason}); not listed`);
    for (const u of records.unreadable) console.error(`picoclaw: ${u.key} is not a readable request record (${u.reason}); not listed`);
    if (records.incomplete) console.error("picoclaw: reading the request records stopped early; the list may be incomplete");

    const rows = new Map<string, RequestRow>();
    if (!o.failed) {
      const queue = await queuedRequests(await nc.jetstreamManager(), client.names);
      if ("unreadable" in queue) console.error(`picoclaw: requests still queued for a coordinator are not listed: ${queue.unreadable}`);
      else
        for (const q of queue.requests)
          rows.set(q.request, { request: q.request, status: "queued", at: q.submitted_at, text: snippet(q.text) });
    }
    for (const [id, r] of records.records) rows.set(id, { ...rowOf(id, r), text: r.text ? snippet(r.text) : rows.get(id)?.text });
    for (const l of dead.letters) {
      const row = rows.get(l.request);
      rows.set(l.request, {
        request: l.request,
        at: row?.at ?? l.at,
        coordinator: row?.coordinator ?? l.coordinator,
        tasks: row?.tasks,
        status: "failed",
        dead_letter: true,
        failures: l.failures,
        error: oneLine(l.error),
        text: row?.text ?? snippet(l.text),
      });
    }
    let list = [...rows.values()].sort((a, b) => b.at - a.at || (a.request < b.request ? -1 : 1));
    if (o.failed) list = list.filter((r) => r.status === "failed" || r.status === "rejected" || r.dead_letter);

    if (o.json) {
      for (const r of list) console.log(JSON.stringify(r));
      return 0;
    }
    if (list.length === 0) {
      console.log(o.failed ? `no failed requests kept in swarm ${hid}` : `no requests kept in swarm ${hid}`);
      return 0;
    }
    const shown = o.failed ? list : list.slice(0, LIST_LIMIT);
    for (const r of shown) console.log(formatRow(r));
    if (shown.length < list.length) console.log(`… and ${list.length - shown.length} older (picoclaw requests --json lists every one)`);
    return 0;
  } finally {
    await client.close();
  }
}

/** `2026-05-01T10:00:00.000Z  r-1a2b3c4d5e  failed (dead letter)  3 failures, last error: ... · "the text"` */
export function formatRow(r: RequestRow): string {
  const label = r.dead_letter ? `${r.status} (dead letter)` : r.status;
  const parts: string[] = [];
  if (r.status === "queued") parts.push("waiting for a coordinator");
  if (r.tasks !== undefined) parts.push(`${r.tasks} sub-task${r.tasks === 1 ? "" : "s"}`);
  if (r.status === "running" && r.coordinator) parts.push(`coordinator ${r.coordinator}`);
  if (r.dead_letter) parts.push(`${r.failures} failures, last error: ${r.error}`);
  else if (r.error) parts.push(`error: ${r.error}`);
  if (r.text) parts.push(`"${r.text}"`);
  return `${new Date(r.at).toISOString()}  ${r.request}  ${label.padEnd(20)}  ${parts.join(" · ")}`;
}

function rowOf(request: string, r: RequestRecord): RequestRow {
  const a = r.status === "answered" ? r.answer : undefined;
  // An answer event of kind `failed` is a rejection (a bad plan, a capability nobody offers); a dead
  // letter's is too, and is marked as a dead letter by its caller.
  const status: RequestStatus = !a ? "running" : a.kind === "failed" ? "rejected" : (a.status ?? "completed");
  return {
    request,
    status,
    at: r.started_at,
    coordinator: r.coordinator,
    tasks: r.summary?.tasks.length ?? r.plan?.tasks.length,
    error: a?.error ? oneLine(a.error) : undefined,
  };
}

function oneLine(text: string, max = 200): string {
  const s = text.replace(/\s+/g, " ").trim();
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function snippet(text: string): string {
  return oneLine(text, 80);
}

/**
 * The last value of every `request.<id>` record, read with one ordered consumer on the bucket's stream
 * (one round trip for all, and the rights `requests --failed` already needs to list the dead letters).
 */
async function readRequestRecords(
  nc: NatsConnection,
  kv: KV,
): Promise<{ records: Map<string, RequestRecord>; unreadable: { key: string; reason: string }[]; incomplete: boolean }> {
  const records = new Map<string, RequestRecord>();
  const unreadable: { key: string; reason: string }[] = [];
  const status = await kv.status();
  const prefix = kvSubject(status.bucket, "");
  const opts = consumerOpts();
  opts.orderedConsumer();
  opts.deliverLastPerSubject();
  opts.bindStream(status.streamInfo.config.name);
  const sub = await nc.jetstream().subscribe(kvSubject(status.bucket, taskKeys.requestAll), opts);
  let incomplete = false;
  // What the consumer had to deliver when it was made (nats.js's own kv.keys() looks at the same).
  const pending = (sub as unknown as { info?: { last?: { num_pending?: number } } | null }).info?.last?.num_pending ?? 0;
  if (pending > 0) {
    let idle: Timer | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        incomplete = true;
        sub.unsubscribe();
      }, RECORDS_IDLE_MS);
    };
    arm();
    for await (const m of sub) {
      arm();
      const key = m.subject.slice(prefix.length);
      // A deleted or purged record leaves an empty marker as the subject's last message.
      if (m.data.length > 0) {
        const d = decode(requestRecordSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
        if (d.ok) records.set(key.slice(taskKeys.request("").length), d.value as RequestRecord);
        else unreadable.push({ key, reason: d.reason });
      }
      if (m.info.pending === 0) break;
    }
    clearTimeout(idle);
  }
  sub.unsubscribe();
  return { records, unreadable, incomplete };
}

/** The requests in the REQUESTS queue (waiting for a coordinator, or being handled), or why they cannot be read. */
export async function queuedRequests(
  jsm: JetStreamManager,
  names: SwarmNames,
): Promise<{ requests: RequestMsg[] } | { unreadable: string }> {
  const stream = names.streams.requests;
  try {
    const state = await jsm.streams
      .info(stream)
      .then((i) => i.state)
      .catch((err) => {
        if (isStreamNotFound(err)) return undefined; // no node ever started in this swarm
        throw err;
      });
    if (!state || state.messages === 0) return { requests: [] };
    if (state.messages > MAX_QUEUE_READ)
      return { unreadable: `${state.messages} requests are queued, more than the ${MAX_QUEUE_READ} read` };
    const requests: RequestMsg[] = [];
    let read = 0;
    for (let seq = state.first_seq; seq <= state.last_seq && read < state.messages; read++) {
      // Work-queue sequences have gaps (each answered request is removed): ask for the next one from `seq`.
      const next = { seq, next_by_subj: names.requestSubmit } as unknown as MsgRequest;
      const m = await jsm.streams.getMessage(stream, next).catch((err) => {
        if (isNoMessage(err)) return undefined;
        throw err;
      });
      if (!m) break;
      const d = decode(requestSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (d.ok) requests.push(d.value);
      seq = m.seq + 1;
    }
    return { requests };
  } catch (err) {
    if (isTransientNatsError(err)) throw err;
    return { unreadable: `cannot read stream ${stream} (${(err as Error).message})` };
  }
}

/** Whether the EVENTS stream keeps any event of `request` (its own, or one of its sub-tasks'). */
async function hasEvents(jsm: JetStreamManager, names: SwarmNames, request: string): Promise<boolean> {
  for (const filter of [names.requestEvents(request), names.taskEventsOf(request)]) {
    const info = await jsm.streams.info(names.streams.events, { subjects_filter: filter }).catch((err) => {
      if (isStreamNotFound(err)) return undefined;
      throw err;
    });
    if (!info) return false;
    if (Object.keys(info.state.subjects ?? {}).length > 0) return true;
  }
  return false;
}

export type Lookup = { state: "known" } | { state: "unknown" } | { state: "unsure"; reason: string };

/** Temporal mode acks a request once its workflow is started, a moment before the workflow's first event. */
const RECHECK_MS = 1_500;

/**
 * Whether the swarm has `request`: queued, or with events kept (a coordinator took it; its events stay
 * for swarm.tasks.retention). "unsure" when the queue holds requests this user may not read.
 */
export async function lookupRequest(nc: NatsConnection, names: SwarmNames, request: string, recheckMs = RECHECK_MS): Promise<Lookup> {
  const jsm = await nc.jetstreamManager();
  try {
    for (let round = 0; ; round++) {
      if (await hasEvents(jsm, names, request)) return { state: "known" };
      const queue = await queuedRequests(jsm, names);
      if ("unreadable" in queue) return { state: "unsure", reason: queue.unreadable };
      if (queue.requests.some((r) => r.request === request)) return { state: "known" };
      // Taken from the queue while we looked: a coordinator stores its first event before it acks.
      if (await hasEvents(jsm, names, request)) return { state: "known" };
      if (round > 0) return { state: "unknown" };
      await Bun.sleep(recheckMs);
    }
  } catch (err) {
    if (isTransientNatsError(err)) throw err;
    return { state: "unsure", reason: (err as Error).message };
  }
}

/** JetStream's "no message found" (API error 10037): nothing at or after the sequence asked for. */
function isNoMessage(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string } | undefined;
  return e?.api_error?.err_code === 10037 || /no message found/i.test(String(e?.message ?? ""));
}
