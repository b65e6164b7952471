// The one schema: defaults, types and allowed values of every config key.
// Flags and environment variables arrive as strings, so each leaf also accepts its string form.
import { z } from "zod";
import { parseDuration } from "./duration.ts";
import { ID_PATTERN } from "./ids.ts";

const ID_RULE = "1-64 characters from A-Z a-z 0-9 _ - (no dots, spaces, '*' or '>')";

const id = z.string().regex(ID_PATTERN, { message: ID_RULE });

const bool = z.preprocess((v) => {
  if (typeof v !== "string") return v;
  const s = v.trim().toLowerCase();
  if (["true", "1", "yes", "on", ""].includes(s)) return true;
  if (["false", "0", "no", "off"].includes(s)) return false;
  return v;
}, z.boolean({ message: "true or false" }));

const int = (min: number, max: number) =>
  z.preprocess(
    (v) => (typeof v === "string" && /^\s*-?\d+\s*$/.test(v) ? Number(v) : v),
    z.number({ message: `an integer from ${min} to ${max}` }).int({ message: `an integer from ${min} to ${max}` })
      .min(min, { message: `an integer from ${min} to ${max}` }).max(max, { message: `an integer from ${min} to ${max}` }),
  );

/** Milliseconds; written as 10s, 500ms, 2m, 1h (a bare number is milliseconds). */
const duration = (min: number) =>
  z.preprocess(
    (v) => (typeof v === "string" || typeof v === "number" ? (parseDuration(v) ?? v) : v),
    z.number({ message: "a duration like 500ms, 10s, 2m or 1h" })
      .min(min, { message: `a duration of at least ${min}ms` }),
  );

/** Lists come as YAML arrays or as comma-separated strings ("code,research"). */
const list = <T extends z.ZodType>(item: T) =>
  z.preprocess(
    (v) => (typeof v === "string" ? v.split(",").map((s) => s.trim()).filter((s) => s !== "") : v),
    z.array(item),
  );

const optionalString = z.string().optional();

const natsSchema = z.strictObject({
  urls: list(z.string().regex(/^(nats|tls|ws|wss):\/\/\S+$|^[\w.-]+:\d+$/, {
    message: "NATS URLs like nats://host:4222 or tls://host:4222, comma-separated",
  })).refine((a) => a.length > 0, { message: "at least one NATS URL" }).default(["nats://localhost:4222"]),
  embedded: bool.default(false),
  embedded_port: int(1, 65535).default(4222),
  embedded_host: z.string().min(1).default("127.0.0.1"),
  store_dir: z.string().min(1).default("~/.picoclaw/nats"),
  heartbeat_interval: duration(50).default(10_000),
  node_timeout: duration(100).default(60_000),
  connect_timeout: duration(100).default(5_000),
  credentials: optionalString,
  nkey_seed: optionalString,
  token: optionalString,
  user: optionalString,
  password: optionalString,
  tls: z.strictObject({
    ca_file: optionalString,
    cert_file: optionalString,
    key_file: optionalString,
  }).prefault({}),
});

const temporalSchema = z.strictObject({
  enabled: bool.optional(),
  address: z.string().default(""),
  namespace: z.string().min(1).default("default"),
  task_queue: z.string().min(1).default("picoclaw-swarm"),
});

export const ROLES = ["coordinator", "worker", "specialist"] as const;
export type Role = (typeof ROLES)[number];

const swarmSchema = z.strictObject({
  enabled: bool.default(false),
  role: z.enum(ROLES, { message: ROLES.join(" | ") }).default("worker"),
  hid: id.optional(),
  sid: id.optional(),
  node_id: id.optional(),
  capabilities: list(id).default(["general"]),
  max_concurrent: int(1, 1000).default(5),
  nats: natsSchema.prefault({}),
  temporal: temporalSchema.prefault({}),
});

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

export const configSchema = z.strictObject({
  swarm: swarmSchema.prefault({}),
  log: z.strictObject({
    level: z.enum(LOG_LEVELS, { message: LOG_LEVELS.join(" | ") }).default("info"),
  }).prefault({}),
})
  .refine((c) => c.swarm.nats.node_timeout > c.swarm.nats.heartbeat_interval, {
    path: ["swarm", "nats", "node_timeout"],
    message: "longer than swarm.nats.heartbeat_interval",
  });

export type Config = z.output<typeof configSchema>;

/** Keys whose values are never printed or logged. */
export const SECRET_KEYS = ["swarm.nats.token", "swarm.nats.password"] as const;

/** Boolean keys: on the command line they may stand alone (`--swarm.enabled`). */
export const BOOLEAN_KEYS = ["swarm.enabled", "swarm.nats.embedded", "swarm.temporal.enabled"] as const;

/** Every leaf key of the schema, dotted ("swarm.nats.urls"), read from the schema itself. */
export function configKeys(): string[] {
  const out: string[] = [];
  const walk = (schema: z.ZodType, prefix: string) => {
    const inner = unwrapObject(schema);
    if (!inner) {
      out.push(prefix);
      return;
    }
    for (const [k, v] of Object.entries(inner.shape)) walk(v as z.ZodType, prefix ? `${prefix}.${k}` : k);
  };
  walk(configSchema as unknown as z.ZodType, "");
  return out;
}

function unwrapObject(schema: z.ZodType): z.ZodObject | undefined {
  let s: unknown = schema;
  for (let i = 0; i < 5; i++) {
    if (s instanceof z.ZodObject) return s;
    const def = (s as { def?: { innerType?: unknown; in?: unknown; type?: string } }).def;
    const next = def?.innerType ?? (def?.type === "pipe" ? def.in : undefined);
    if (!next) return undefined;
    s = next;
  }
  return undefined;
}
