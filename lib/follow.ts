// Following one request: every stored event of it from the EVENTS stream, from the first, then each new
// one as it is stored. Ordered consumers (one for the request's events, one for its sub-tasks': a 2.9
// server takes one filter subject per consumer) resume where they were after a reconnect, so an answer
// published while the client was cut off is still delivered, and following again later (`watch`)
// replays what was missed. A plain subscription on the same subjects brings each event at once as
// well, including one its publisher's server could not store (a host cut off from the stream's
// quorum); each distinct event is handed over once, whichever way came first (with its headers: a
// signature check needs them, and a copy without the signature is not the same event). Live progress
// that no stream stores (a tool call's end) comes by a plain subscription only.
import type { ConsumerMessages, MsgHdrs, NatsConnection, Subscription } from "nats";
import { decode } from "./messages.ts";
import { signatureOf } from "./signing.ts";
import type { SwarmNames } from "./subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type RequestEvent, requestEventSchema, type TaskEvent, taskEventSchema } from "./task-messages.ts";

/** An event as stored: what a signature check needs. */
export type StoredEvent = { subject: string; data: Uint8Array; headers?: MsgHdrs };

export interface FollowHandlers {
  request(ev: RequestEvent, stored: StoredEvent): void;
  task?(ev: TaskEvent, stored: StoredEvent): void;
  /** A stored event that does not parse (counted by the caller; following goes on). */
  bad?(subject: string, reason: string): void;
}

export interface Follower {
  stop(): Promise<void>;
}

const td = new TextDecoder();

/** Idle heartbeats let the ordered consumer notice a lost server and recreate itself on reconnect. */
const IDLE_HEARTBEAT_MS = 2_000;
/**
 * Each pull's expiry, which nats.js also waits between tries to (re)create the ordered consumer: with
 * its default (30 s) a creation lost with a server (placed on a peer that just died) left `watch` silent
 * for half a minute or more; 5 s tries again soon after.
 */
const PULL_EXPIRES_MS = 5_000;

/**
 * How long the first ordered consumer may take to be made. nats.js tries again on its own, silently, up
 * to 30 times a pull's expiry apart; past this the caller hears a timeout it can report and retry.
 */
const SETUP_TIMEOUT_MS = 10_000;

async function withinSetup(made: Promise<ConsumerMessages>, stream: string): Promise<ConsumerMessages> {
  let timer: Timer | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      made.then((m) => m.close()).catch(() => {}); // made after all: nobody reads it
      reject(new Error(`timed out after ${SETUP_TIMEOUT_MS / 1000}s making a consumer on stream ${stream} (JetStream leaders moving?)`));
    }, SETUP_TIMEOUT_MS);
  });
  try {
    return await Promise.race([made, late]);
  } finally {
    clearTimeout(timer);
  }
}

export async function followRequest(nc: NatsConnection, names: SwarmNames, request: string, on: FollowHandlers): Promise<Follower> {
  const js = nc.jetstream();
  const streams: ConsumerMessages[] = [];
  const subs: Subscription[] = [];
  const loops: Promise<void>[] = [];
  // Events are never re-published, so the same bytes (and signature) on the same subject are the same event.
  const seen = new Set<string>();
  const follow = async <T>(subject: string, schema: Parameters<typeof decode<T>>[0], handle: (ev: T, stored: StoredEvent) => void) => {
    const deliver = (m: { subject: string; data: Uint8Array; headers?: MsgHdrs }) => {
      const key = `${m.subject} ${signatureOf(m.headers)} ${td.decode(m.data)}`;
      if (seen.has(key)) return;
      seen.add(key);
      const d = decode(schema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (d.ok) handle(d.value, m);
      else on.bad?.(m.subject, d.reason);
    };
    subs.push(nc.subscribe(subject, { callback: (_e, m) => deliver(m) }));
    const consumer = await js.consumers.get(names.streams.events, { filterSubjects: subject });
    const messages = await withinSetup(
      consumer.consume({ max_messages: 256, idle_heartbeat: IDLE_HEARTBEAT_MS, expires: PULL_EXPIRES_MS }),
      names.streams.events,
    );
    streams.push(messages);
    loops.push(
      (async () => {
        for await (const m of messages) deliver(m);
      })().catch(() => {}), // the iterator ends with an error when the connection closes under it
    );
  };
  const stop = async () => {
    for (const s of subs) s.unsubscribe();
    for (const s of streams) await s.close().catch(() => {});
    await Promise.all(loops);
  };
  try {
    await follow(names.requestEvents(request), requestEventSchema, on.request);
    if (on.task) {
      await follow(names.taskEventsOf(request), taskEventSchema, on.task);
      // Progress that is never stored (tool calls as they end): heard while following, not replayed.
      const live = on.task;
      subs.push(
        nc.subscribe(names.taskLiveOf(request), {
          callback: (_e, m) => {
            const d = decode(taskEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
            if (d.ok) live(d.value, m);
            else on.bad?.(m.subject, d.reason);
          },
        }),
      );
    }
  } catch (err) {
    await stop(); // no half-made follower left behind when the caller tries again
    throw err;
  }
  return { stop };
}
