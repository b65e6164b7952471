// Tool calls waiting for a person, for both dashboards: the pending calls and the decisions in the tasks
// bucket, watched (every one stored so far, then each as it is stored), so a dashboard started late still
// shows what waits. A call leaves the list when it is decided, times out, or its request ends. The web
// dashboard also decides them, with swarm.http.approval_token (see web-routes.ts).
import type { KV, KvEntry, NatsConnection } from "nats";
import { decisionSchema, type PendingCall, pendingCallSchema, printable, whyClosed } from "../../lib/approvals.ts";
import type { Config } from "../../lib/config.ts";
import type { Logger } from "../../lib/log.ts";
import { plainRecords } from "../../lib/record-guard.ts";
import { openTasksKv } from "../../lib/streams.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import { taskKeys } from "../../lib/subjects.ts";
import { briefArgs } from "../../lib/task-messages.ts";

/** One waiting call as the dashboards show it. */
export interface PendingRow {
  id: string;
  request: string;
  task: string;
  node: string;
  tool: string;
  /** The first argument in a few words (`"rm -rf build"`). */
  args: string;
  /** The whole arguments (what the decision covers), control characters replaced, cut at 2000 characters. */
  arguments: string;
  reason?: string;
  asked_at: number;
  expires_at: number;
}

export interface ApprovalsWatch {
  kv: KV;
  list(now?: number): PendingRow[];
  /** Resolves once the calls stored before the watch began are in (one-shot dashboards wait for it). */
  ready: Promise<void>;
  stop(): void;
}

/** How often the requests of listed calls are looked at (a request that ended withdraws its calls). */
const ENDED_CHECK_MS = 5_000;
/** At most this many waiting calls are kept (each is a few hundred bytes; more means something is wrong). */
const MAX_KEPT = 1_000;

/** Watches the waiting calls; undefined (said once) when this NATS user may not read the tasks bucket. */
export async function watchApprovals(nc: NatsConnection, names: SwarmNames, cfg: Config, log: Logger): Promise<ApprovalsWatch | undefined> {
  try {
    return await watch(await openTasksKv(nc, names, cfg));
  } catch (err) {
    log.warn("Tool calls waiting for approval are not shown: the tasks bucket cannot be read", { error: (err as Error).message });
    return undefined;
  }
}

async function watch(kv: KV): Promise<ApprovalsWatch> {
  const pending = new Map<string, PendingCall>();
  const decided = new Set<string>();
  const withdrawn = new Set<string>();
  const watchers: { stop(): void }[] = [];
  const follow = async (key: string, onEntry: (e: KvEntry) => void): Promise<Promise<void>> => {
    let initialized = () => {};
    const ready = new Promise<void>((resolve) => {
      initialized = resolve;
    });
    const it = await kv.watch({ key, initializedFn: () => initialized(), ignoreDeletes: true });
    watchers.push(it);
    (async () => {
      for await (const e of it) onEntry(e);
    })().catch(() => {}); // ends when the watch is stopped or the connection closes
    return ready;
  };
  const stopAll = () => {
    for (const w of watchers) w.stop();
  };
  let readyAll: Promise<unknown>;
  try {
    readyAll = Promise.all([
      await follow(taskKeys.approvalAll, (e) => {
        const r = plainRecords.read(e.key, e, pendingCallSchema);
        if (r.state !== "ok") return;
        const closed = decided.has(r.value.id) || withdrawn.has(r.value.id) || r.value.expires_at <= Date.now();
        if (!closed && pending.size < MAX_KEPT) pending.set(r.value.id, r.value);
      }),
      await follow(taskKeys.decisionAll, (e) => {
        const r = plainRecords.read(e.key, e, decisionSchema);
        if (r.state !== "ok") return;
        decided.add(r.value.id);
        pending.delete(r.value.id);
      }),
    ]);
  } catch (err) {
    stopAll(); // the first watch, when the second could not be made
    throw err;
  }
  /** Calls that can no longer be decided (timed out, request ended) leave; the sets stay bounded. */
  const checkEnded = async () => {
    for (const call of [...pending.values()]) {
      if (!(await whyClosed(kv, call).catch(() => undefined))) continue;
      pending.delete(call.id);
      withdrawn.add(call.id);
    }
    for (const set of [decided, withdrawn]) for (const id of set) if (set.size > MAX_KEPT * 10) set.delete(id);
  };
  const timer = setInterval(() => void checkEnded(), ENDED_CHECK_MS);
  timer.unref?.();
  return {
    kv,
    ready: readyAll.then(checkEnded),
    list(now = Date.now()) {
      return [...pending.values()]
        .filter((c) => c.expires_at > now && !withdrawn.has(c.id))
        .sort((a, b) => a.created_at - b.created_at)
        .map((c) => ({
          ...{ id: c.id, request: c.request, task: c.task, node: c.node, tool: c.tool, args: printable(briefArgs(c.arguments)) },
          ...{
            arguments: printable(c.arguments),
            reason: c.reason && printable(c.reason),
            asked_at: c.created_at,
            expires_at: c.expires_at,
          },
        }));
    },
    stop() {
      clearInterval(timer);
      stopAll();
    },
  };
}
