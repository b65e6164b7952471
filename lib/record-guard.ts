// Records read back from the tasks KV bucket are input like any message: whoever may write the bucket
// can put anything there. Each record is size-checked, parsed and validated with its schema; request
// records are also sealed by the coordinator that wrote them (swarm.security.signing) and their seal is
// checked when read, so a coordinator resuming a request never re-signs a plan it did not make. A bad
// record is reported (a log line and the bad-input counter, with its KV subject) and read as absent or
// as a failure by the caller: it never crashes a node, and is never retried in a loop.
import type { KvEntry } from "nats";
import type { z } from "zod";
import type { BadInputCounter, RefusedKind } from "./bad-input.ts";
import { decode } from "./messages.ts";
import { type Signer, sealRecord, verifyRecord } from "./signing.ts";
import { kvSubject } from "./subjects.ts";
import { MAX_PIPELINE_MESSAGE_BYTES } from "./task-messages.ts";

export type RecordRead<T> = { state: "absent" } | { state: "ok"; value: T } | { state: "bad"; reason: string };

export interface RecordGuard {
  /**
   * An entry read under `key`, checked with `schema` (and, when `sealed` and signing is on, its seal).
   * A bad one has been reported when this returns.
   */
  read<T>(
    key: string,
    entry: KvEntry | null | undefined,
    schema: z.ZodType<T>,
    o?: { sealed?: boolean; kind?: RefusedKind },
  ): RecordRead<T>;
  /** `record` as it should be written under `key`: sealed when signing is on. */
  seal<T extends object>(key: string, record: T): T;
  /** A record refused by a check made elsewhere (a result's own signature): counted like the others. */
  refuse(key: string, kind: RefusedKind, reason: string): void;
}

export interface RecordGuardOptions {
  bucket: string;
  /** Where bad records are counted (and logged, rate-limited). */
  bad?: BadInputCounter;
  /** Signing on: seals records with this key when written... */
  signer?: Signer;
  /** ...and accepts sealed records only from these keys when read. */
  trusted?: ReadonlySet<string>;
}

export function createRecordGuard(o: RecordGuardOptions): RecordGuard {
  return {
    read(key, entry, schema, r = {}) {
      if (entry?.operation !== "PUT") return { state: "absent" };
      const bad = (reason: string): RecordRead<never> => {
        o.bad?.refuse(kvSubject(o.bucket, key), r.kind ?? "record", reason);
        return { state: "bad", reason };
      };
      const d = decode(schema, entry.value, MAX_PIPELINE_MESSAGE_BYTES);
      if (!d.ok) return bad(d.reason);
      if (r.sealed && o.trusted) {
        // Checked over the record as stored (not as the schema returns it).
        const verdict = verifyRecord(key, JSON.parse(entry.string()) as Record<string, unknown>, o.trusted);
        if (!verdict.ok) return bad(verdict.reason);
      }
      return { state: "ok", value: d.value };
    },
    seal: (key, record) => (o.signer ? sealRecord(o.signer, key, record) : record),
    refuse: (key, kind, reason) => o.bad?.refuse(kvSubject(o.bucket, key), kind, reason),
  };
}

/** Validates with the schema, counts nothing: for tools and tests that read records of their own. */
export const plainRecords: RecordGuard = createRecordGuard({ bucket: "(tasks)" });
