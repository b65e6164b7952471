// Coordinator leadership: one lease key in the leader bucket (bucket TTL = lease TTL), created by the
// first coordinator, renewed by revision every third of the TTL. A standby creates it once it expires.
// Fencing: a leader that has not renewed within two thirds of the TTL (e.g. it was paused) no longer
// counts itself leader, before any other coordinator can have taken the lease.
import type { KV, NatsConnection } from "nats";
import { z } from "zod";
import { PicoclawError } from "../../lib/errors.ts";
import { ID_PATTERN } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { decode, encode } from "../../lib/messages.ts";
import { withTimeout } from "../../lib/streams.ts";
import type { SwarmNames } from "../../lib/subjects.ts";

/** The lease record: who holds it. */
const leaseSchema = z.object({ node: z.string().regex(ID_PATTERN), at: z.number() });

/** Thrown before a write by a coordinator that no longer holds the lease: the request goes back to the queue. */
export class StaleLeaderError extends PicoclawError {
  override name = "StaleLeaderError";
  constructor(reason: string) {
    super("E_STALE_LEADER", reason);
  }
}

export interface Leadership {
  /** True while this coordinator holds a fresh lease. */
  holds(): boolean;
  /** Throws StaleLeaderError unless this coordinator holds a fresh lease. Call before every write. */
  fence(): void;
  /** The lease revision this coordinator holds (0 when not leader): stamped on its records. */
  revision(): number;
  /** Asks the server whether the lease is still ours (one round trip; for the final answer). */
  confirm(): Promise<boolean>;
  /** Releases the lease at once on a graceful stop, so a standby takes over without waiting. */
  stop(): Promise<void>;
}

export interface LeadershipOptions {
  nc: NatsConnection;
  names: SwarmNames;
  node: string;
  ttlMs: number;
  replicas: number;
  log: Logger;
  onChange: (leading: boolean) => void;
}

const RETRY_SOON_MS = 300;

/** A sixth of the TTL (1.7 s at the default 10 s), at least 1 s: room for two tries before the lease is stale. */
function renewalTimeoutMs(ttlMs: number): number {
  return Math.max(1_000, Math.round(ttlMs / 6));
}

export async function startLeadership(o: LeadershipOptions): Promise<Leadership> {
  const bucket = await o.nc.jetstream().views.kv(o.names.buckets.leader, { history: 1, ttl: o.ttlMs, replicas: o.replicas });
  // Renewals get a short time-out: one lost with a restarting server is asked about and tried again
  // within a second or two, long before the lease goes stale, instead of waiting out the default 5 s.
  const kv: KV = await withTimeout(o.nc, bucket, renewalTimeoutMs(o.ttlMs));
  const key = o.names.leaderKey;
  let rev = 0;
  let renewedAt = 0; // monotonic clock (performance.now)
  let stopped = false;
  let ticking = false;
  let again: ReturnType<typeof setTimeout> | undefined;
  const fresh = () => rev > 0 && performance.now() - renewedAt < (o.ttlMs * 2) / 3;
  let leading = false;

  const setLeading = (now: boolean, why: string) => {
    if (now === leading) return;
    leading = now;
    o.log.info(now ? "Coordinator leading" : "Coordinator stepped down", { node: o.node, lease_revision: rev, reason: why });
    o.onChange(now);
  };

  const tick = async () => {
    if (stopped || ticking) return;
    ticking = true;
    try {
      await renew();
    } finally {
      ticking = false;
    }
  };
  /** A renewal that could not be settled (NATS away) is tried again soon, not a third of the TTL later. */
  const retrySoon = () => {
    if (stopped || again) return;
    again = setTimeout(() => {
      again = undefined;
      tick().catch(() => {});
    }, RETRY_SOON_MS);
  };

  const renew = async () => {
    const started = performance.now();
    try {
      if (rev > 0 && fresh()) {
        rev = await kv.update(key, encode({ node: o.node, at: Date.now() }), rev);
        renewedAt = started;
      } else {
        if (rev > 0) setLeading(false, "lease not renewed in time");
        rev = 0;
        rev = await kv.create(key, encode({ node: o.node, at: Date.now() }));
        renewedAt = started;
        setLeading(true, "lease acquired");
      }
    } catch {
      if (rev === 0) return; // someone else holds it, or NATS is away: try again next tick
      // A renewal whose reply was lost may still have been stored: ask before giving the lease up.
      const held = await holder().catch(() => undefined);
      // Not known (NATS away): still ours while it is fresh; the watchdog steps down when it is not.
      if (held === undefined) return retrySoon();
      if (held && held.node === o.node && held.revision >= rev) {
        // Stored after all: renewed. Not stored: renew again now, not a third of the TTL later.
        if (held.revision > rev) renewedAt = started;
        else retrySoon();
        rev = held.revision;
        return;
      }
      setLeading(false, "lease lost");
      rev = 0;
    }
  };

  /** Who holds the lease by the server's word (null: nobody); throws when the server cannot be asked. */
  const holder = async (): Promise<{ node?: string; revision: number } | null> => {
    const e = await kv.get(key);
    if (e?.operation !== "PUT") return null;
    // Whatever is stored is read like any input: a lease that does not parse has no holder.
    const lease = decode(leaseSchema, e.value);
    return { node: lease.ok ? lease.value.node : undefined, revision: e.revision };
  };

  await tick();
  const timer = setInterval(
    () => {
      tick().catch((err) => o.log.debug("Lease renewal failed", { error: (err as Error).message }));
    },
    Math.max(200, o.ttlMs / 3),
  );
  // A paused process wakes up with a stale lease: notice it without waiting for the next renewal.
  const watchdog = setInterval(
    () => {
      if (leading && !fresh()) setLeading(false, "lease not renewed in time");
    },
    Math.max(100, o.ttlMs / 10),
  );

  return {
    holds: () => leading && fresh(),
    fence() {
      if (!(leading && fresh())) throw new StaleLeaderError("no longer the leading coordinator");
    },
    revision: () => (leading && fresh() ? rev : 0),
    async confirm() {
      // Asked again while the lease is fresh: a slow or lost reply must not hand a finished request back.
      // A renewal may land between our read and the check, so "ours" is: our node, at our revision or later.
      for (let wait = 50; leading && fresh(); wait = Math.min(wait * 2, 500)) {
        const since = rev;
        const held = await holder().catch(() => undefined);
        if (held !== undefined) return held !== null && held.node === o.node && held.revision >= since;
        await Bun.sleep(wait);
      }
      return false;
    },
    async stop() {
      stopped = true;
      clearTimeout(again);
      clearInterval(timer);
      clearInterval(watchdog);
      if (leading && fresh()) await kv.delete(key, { previousSeq: rev }).catch(() => {});
      setLeading(false, "stopping");
    },
  };
}
