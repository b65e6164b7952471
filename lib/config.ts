// Effective config: CLI flag > environment > config file > schema default, with the source of each value.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { type Config, configKeys, configSchema, SECRET_KEYS } from "./config-schema.ts";
import { parseDuration } from "./duration.ts";
import { ConfigError } from "./errors.ts";

export type { Config } from "./config-schema.ts";

/** Where one value came from, for error messages and `picoclaw config`. */
export type Sources = Record<string, string>;

export interface LoadedConfig {
  config: Config;
  sources: Sources;
  /** The config file that was read, if any. */
  file?: string;
}

export interface ConfigInputs {
  /** Config-key flags, dotted keys as typed (`swarm.max-concurrent` or `swarm.max_concurrent`). */
  flags: Record<string, unknown>;
  env: Record<string, string | undefined>;
  /** `--config PATH`; otherwise `PICOCLAW_CONFIG`, then `~/.picoclaw/config.yaml` when it exists. */
  configPath?: string;
  home?: string;
}

const KEYS = configKeys();
const KEY_SET = new Set(KEYS);

/** `swarm.max-concurrent` -> `swarm.max_concurrent`; the guide writes both. */
export function canonicalKey(key: string): string {
  return key.replace(/-/g, "_");
}

export function isConfigKey(key: string): boolean {
  return KEY_SET.has(canonicalKey(key));
}

/** `swarm.nats.urls` -> `PICOCLAW_SWARM_NATS_URLS`. */
export function envName(key: string): string {
  return `PICOCLAW_${key.replace(/\./g, "_").toUpperCase()}`;
}

export function defaultConfigPath(home = homedir()): string {
  return join(home, ".picoclaw", "config.yaml");
}

/** Expands a leading `~/` so paths in config behave like a shell's. */
export function expandHome(path: string, home = homedir()): string {
  return path === "~" ? home : path.startsWith("~/") ? join(home, path.slice(2)) : path;
}

export function loadConfig(inputs: ConfigInputs): LoadedConfig {
  const home = inputs.home ?? inputs.env.HOME ?? homedir();
  const raw: Record<string, unknown> = {};
  const sources: Sources = {};
  const set = (key: string, value: unknown, source: string) => {
    setPath(raw, key, value);
    sources[key] = source;
  };

  const explicitPath = inputs.configPath ?? inputs.env.PICOCLAW_CONFIG;
  const path = explicitPath ? resolve(explicitPath) : defaultConfigPath(home);
  let file: string | undefined;
  if (existsSync(path)) {
    file = path;
    for (const [key, value] of readConfigFile(path)) set(key, value, `config file ${path}`);
  } else if (explicitPath) {
    throw new ConfigError(
      "--config",
      explicitPath === inputs.configPath ? "flag --config" : "env PICOCLAW_CONFIG",
      "a readable YAML file",
      explicitPath,
    );
  }

  for (const key of KEYS) {
    const name = envName(key);
    const value = inputs.env[name];
    if (value !== undefined) set(key, value, `env ${name}`);
  }
  // OpenAI tools' conventional variable, below our own.
  if (inputs.env.PICOCLAW_LLM_API_KEY === undefined && inputs.env.OPENAI_API_KEY) {
    set("llm.api_key", inputs.env.OPENAI_API_KEY, "env OPENAI_API_KEY");
  }
  for (const [given, value] of Object.entries(inputs.flags)) {
    const key = canonicalKey(given);
    if (!KEY_SET.has(key)) throw new ConfigError(`--${given}`, "command line", `one of the known flags (see --help)`);
    set(key, value, `flag --${given}`);
  }

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.path.filter((p) => typeof p === "string").join(".");
    const leaf = KEY_SET.has(key) ? key : (KEYS.find((k) => k.startsWith(`${key}.`)) ?? key);
    throw new ConfigError(
      key || "config",
      sources[leaf] ?? sources[key] ?? "defaults",
      issue.message,
      key ? redactValue(key, getPath(raw, key)) : undefined,
    );
  }
  const config = parsed.data;
  config.swarm.nats.store_dir = expandHome(config.swarm.nats.store_dir, home);
  for (const key of KEYS) sources[key] ??= "default";
  return { config, sources, file };
}

/** Flattens a YAML file to dotted keys, rejecting unknown keys with the file named. */
function readConfigFile(path: string): [string, unknown][] {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ConfigError("config file", path, `valid YAML (${(err as Error).message.split("\n")[0]})`);
  }
  if (doc === null || doc === undefined) return [];
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError("config file", path, "a YAML mapping with top-level keys swarm: and log:");
  }
  const out: [string, unknown][] = [];
  const walk = (obj: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(obj)) {
      const key = canonicalKey(prefix ? `${prefix}.${k}` : k);
      if (KEY_SET.has(key)) out.push([key, v]);
      else if (v === null && KEYS.some((x) => x.startsWith(`${key}.`)))
        continue; // a section with every key commented out
      else if (v && typeof v === "object" && !Array.isArray(v) && KEYS.some((x) => x.startsWith(`${key}.`))) {
        walk(v as Record<string, unknown>, key);
      } else {
        throw new ConfigError(key, `config file ${path}`, "a known key; see 'picoclaw config' for every key");
      }
    }
  };
  walk(doc as Record<string, unknown>, "");
  return out;
}

function setPath(obj: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split(".");
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== "object" || cur[p] === null) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts.at(-1)!] = value;
}

function getPath(obj: unknown, key: string): unknown {
  let cur = obj;
  for (const p of key.split(".")) {
    if (typeof cur !== "object" || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/** Hides passwords in `nats://user:pass@host` URLs (every URL of a comma-separated list; a password may contain '@'). */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]+):([^/]*)@/g, "//$1:***@");
}

/** A rejected value as it may appear in an error message: secrets hidden. */
function redactValue(key: string, value: unknown): unknown {
  if (value === undefined) return value;
  if ((SECRET_KEYS as readonly string[]).includes(key)) return "***";
  if (typeof value === "string") return redactUrl(value);
  if (Array.isArray(value)) return value.map((v) => (typeof v === "string" ? redactUrl(v) : v));
  return value;
}

/** The effective config as plain data with every set secret replaced by "***" (each entry of a list; an empty list stays empty). */
export function redactedConfig(config: Config): Config {
  const copy = structuredClone(config);
  for (const key of SECRET_KEYS) {
    const value = getPath(copy, key);
    if (value !== undefined) setPath(copy, key, Array.isArray(value) ? value.map(() => "***") : "***");
  }
  copy.swarm.nats.urls = copy.swarm.nats.urls.map(redactUrl);
  // MCP servers' env and headers carry their tokens (GITHUB_TOKEN, Authorization): names shown, values not.
  for (const server of Object.values(copy.tools.mcp.servers)) {
    for (const k of Object.keys(server.env)) server.env[k] = "***";
    for (const k of Object.keys(server.headers)) server.headers[k] = "***";
  }
  return copy;
}

/** The schema of one leaf key (with its default/optional wrappers), read by walking the one schema. */
function leafSchema(key: string): z.ZodType | undefined {
  let cur: unknown = configSchema;
  for (const part of key.split(".")) {
    const obj = unwrapToObject(cur);
    cur = obj?.shape[part];
    if (cur === undefined) return undefined;
  }
  return cur as z.ZodType;
}

function unwrapToObject(schema: unknown): { shape: Record<string, unknown> } | undefined {
  let s = schema as { shape?: Record<string, unknown>; def?: { type?: string; innerType?: unknown; in?: unknown } } | undefined;
  for (let i = 0; i < 6 && s; i++) {
    if (s.def?.type === "object" && s.shape) return s as { shape: Record<string, unknown> };
    s = (s.def?.innerType ?? (s.def?.type === "pipe" ? s.def.in : undefined)) as typeof s;
  }
  return undefined;
}

/**
 * Keys whose values are durations (the schema's `duration()` leaves), found once: a leaf is a duration
 * when it reads "100h" as that many milliseconds (integers refuse the unit, strings keep the text).
 */
export const DURATION_KEYS: ReadonlySet<string> = new Set(
  KEYS.filter((key) => {
    const parsed = leafSchema(key)?.safeParse("100h");
    return parsed?.success === true && parsed.data === 360_000_000;
  }),
);

const UNITS: [string, number][] = [
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1_000],
];

/** Milliseconds as a user writes them: the largest unit that is exact (10000 -> "10s", 1500 -> "1500ms"). */
export function formatDurationExact(ms: number): string {
  if (ms === 0) return "0s";
  for (const [unit, size] of UNITS) {
    const text = `${ms / size}${unit}`;
    if (ms % size === 0 && parseDuration(text) === ms) return text;
  }
  return `${ms}ms`;
}

/** A value as `picoclaw config` and `--help` show it: durations as written (`"10s"`), the rest as JSON. */
export function formatConfigValue(key: string, value: unknown): string {
  if (value === undefined) return "(unset)";
  if (DURATION_KEYS.has(key) && typeof value === "number") return JSON.stringify(formatDurationExact(value));
  return JSON.stringify(value);
}

/** Every key's default from the schema (before `~` is expanded), for `--help`. */
export function configDefaults(): Record<string, unknown> {
  const defaults = configSchema.parse({});
  return Object.fromEntries(KEYS.map((key) => [key, getPath(defaults, key)]));
}

/** Lines for `picoclaw config`: key = value  # source. */
export function describeConfig(loaded: LoadedConfig): string {
  const red = redactedConfig(loaded.config);
  return KEYS.map((key) => `${key} = ${formatConfigValue(key, getPath(red, key))}  # ${loaded.sources[key]}`).join("\n");
}
