// Command line shared by every entry script: dotted config flags (`--swarm.role worker`) plus a few
// command flags. citty parses; this module declares what exists and rejects what does not.
import { parseArgs } from "citty";
import { checkNats, formatChecks } from "./check-nats.ts";
import { canonicalKey, describeConfig, isConfigKey, type LoadedConfig, loadConfig } from "./config.ts";
import { BOOLEAN_KEYS, configKeys } from "./config-schema.ts";
import { ConfigError, type ErrorCode, isPicoclawError } from "./errors.ts";
import type { Role } from "./messages.ts";
import { VERSION } from "./version.ts";

/** Flags that choose what to do rather than configure the node. */
const COMMAND_FLAGS = {
  "swarm.dashboard": "show the swarm dashboard (live; --once for one frame, --json for a snapshot)",
  "swarm.check-nats": "check every configured NATS URL: reachable, JetStream, version, round trip",
  once: "with --swarm.dashboard: print one frame and exit",
  json: "machine-readable output",
  failed: "with requests: the requests the swarm gave up on",
  help: "show this help",
  version: "print the version",
} as const;
type CommandFlag = keyof typeof COMMAND_FLAGS;

export interface Cli {
  /** First positional word (`config`, `submit`, ...) or undefined for "run the node". */
  command?: string;
  positionals: string[];
  /** Config-key flags, canonical dotted keys. */
  flags: Record<string, unknown>;
  configPath?: string;
  /** Value of a non-config flag such as `--plan PATH`. */
  value(flag: "file" | "plan" | "capabilities" | "timeout"): string | undefined;
  is(flag: CommandFlag): boolean;
}

/** Flags that take a value but are not config keys (`submit` options and --config). */
const VALUE_FLAGS = new Set(["config", "file", "plan", "capabilities", "timeout"]);

/** `--swarm.max-concurrent 3` -> `--swarm.max_concurrent 3`; `--swarm.enabled true` -> `--swarm.enabled=true`. */
function normalize(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (/^-[A-Za-z]/.test(tok) && tok !== "-h") {
      throw new ConfigError(tok, "command line", "a known flag; run with --help to list them");
    }
    if (!tok.startsWith("--") || tok === "--") {
      out.push(tok);
      continue;
    }
    const eq = tok.indexOf("=");
    const name = tok.slice(2, eq < 0 ? undefined : eq);
    const value = eq < 0 ? undefined : tok.slice(eq + 1);
    if (isConfigKey(name)) {
      const key = canonicalKey(name);
      const isBool = (BOOLEAN_KEYS as readonly string[]).includes(key);
      const next = argv[i + 1];
      if (isBool && value === undefined && next !== undefined && /^(true|false)$/i.test(next)) {
        out.push(`--${key}=${next}`);
        i++;
      } else out.push(value === undefined ? `--${key}` : `--${key}=${value}`);
    } else if (name in COMMAND_FLAGS || VALUE_FLAGS.has(name)) {
      out.push(tok);
    } else {
      throw new ConfigError(`--${name}`, "command line", "a known flag; run with --help to list them");
    }
  }
  return out;
}

export function parseCli(argv: string[]): Cli {
  const args: Record<string, { type: "boolean" | "string"; alias?: string[] }> = {};
  for (const f of VALUE_FLAGS) args[f] = { type: "string" };
  for (const key of configKeys()) {
    args[key] = { type: (BOOLEAN_KEYS as readonly string[]).includes(key) ? "boolean" : "string" };
  }
  for (const f of Object.keys(COMMAND_FLAGS)) args[f] = { type: "boolean" };
  args.help = { type: "boolean", alias: ["h"] };
  const normalized = normalize(argv);
  const parsed = parseArgs(normalized, args as never) as Record<string, unknown> & { _: string[] };
  const flags: Record<string, unknown> = {};
  for (const key of configKeys())
    if (parsed[key] !== undefined && normalized.some((t) => t === `--${key}` || t.startsWith(`--${key}=`))) flags[key] = parsed[key];
  const positionals = parsed._.map(String);
  return {
    command: positionals[0],
    positionals: positionals.slice(1),
    flags,
    configPath: typeof parsed.config === "string" ? parsed.config : undefined,
    is: (flag) => parsed[flag] === true,
    value: (flag) => (typeof parsed[flag] === "string" ? (parsed[flag] as string) : undefined),
  };
}

/**
 * Loads config for an entry script. A per-role script fixes its role (and implies swarm.enabled);
 * a conflicting `--swarm.role` is an error rather than silently ignored.
 */
export function loadForCli(cli: Cli, env: Record<string, string | undefined>, fixedRole?: Role): LoadedConfig {
  const flags = { ...cli.flags };
  if (fixedRole) {
    const given = flags["swarm.role"];
    if (given !== undefined && given !== fixedRole) {
      throw new ConfigError("swarm.role", "flag --swarm.role", `${fixedRole} (this is the ${fixedRole} entry script)`, given);
    }
    flags["swarm.role"] = fixedRole;
  }
  const loaded = loadConfig({ flags, env, configPath: cli.configPath });
  if (fixedRole) loaded.sources["swarm.role"] = `entry script roles/${fixedRole}.ts`;
  return loaded;
}

/** A command of an entry script (`submit`, `drain`, ...): its help line and what it does. */
export interface Command {
  usage: string[];
  run(cli: Cli, loaded: LoadedConfig): Promise<number>;
}

export interface Entry {
  /** Script name for help text and errors, e.g. "picoclaw-worker". */
  name: string;
  /** Per-role scripts fix the role (and imply swarm mode). */
  role?: Role;
  /** What running without a command does. */
  usage: string;
  run(cli: Cli, loaded: LoadedConfig): Promise<number>;
  commands?: Record<string, Command>;
}

/**
 * Exit status per error code: 2 bad input, 4 NATS unreachable or unusable, 1 anything else that stops
 * us (submit also exits 1 for a failed or rejected request and 3 when no answer came in time).
 */
const EXIT_STATUS: Record<ErrorCode, number> = {
  E_CONFIG: 2,
  E_INVALID_ID: 2,
  E_PLAN: 2,
  E_NATS_CONNECT: 4,
  E_JETSTREAM_MISSING: 4,
  E_NATS: 4,
  E_NATS_SERVER_MISSING: 1,
  E_LLM: 1,
  E_STALE_LEADER: 1,
  E_TOOLS: 1,
};

/** Exit status of a command: see EXIT_STATUS. */
export const EXIT = { ok: 0, failed: 1, badInput: 2, noAnswer: 3, nats: 4 } as const;

/** Every entry script's life: parse, load config, dispatch, and turn errors into one line and an exit status. */
export async function runEntry(argv: string[], entry: Entry): Promise<number> {
  try {
    const cli = parseCli(argv);
    if (cli.is("help")) return print(usage(entry));
    if (cli.is("version")) return print(`picoclaw ${VERSION}`);
    const loaded = loadForCli(cli, process.env, entry.role);
    if (cli.command === "config") return print(describeConfig(loaded));
    if (cli.command !== undefined) {
      const command = entry.commands?.[cli.command];
      if (!command) {
        const known = ["config", ...Object.keys(entry.commands ?? {})].join(", ");
        const elsewhere = entry.commands ? "" : "; submit, drain and the other client commands are in picoclaw, the all-in-one";
        throw new ConfigError(cli.command, "command line", `a command of ${entry.name}: ${known} (or none to ${entry.usage})${elsewhere}`);
      }
      return await command.run(cli, loaded);
    }
    if (cli.is("swarm.check-nats")) return await runCheckNats(loaded);
    return await entry.run(cli, loaded);
  } catch (err) {
    return reportError(err);
  }
}

/** One clear line on stderr; the exit status comes from the error's code. */
export function reportError(err: unknown): number {
  if (isPicoclawError(err)) {
    console.error(`picoclaw: ${err.message}`);
    return EXIT_STATUS[err.code];
  }
  // nats.js failures (TIMEOUT, 503 no responders, CONNECTION_CLOSED, a server refusing a stream...) are
  // network or server trouble, not bugs, also when wrapped with what we were doing.
  const nats = natsErrorIn(err);
  if (nats) {
    const code = "code" in nats ? ` (${String(nats.code)})` : "";
    console.error(`picoclaw: ${nats === err ? `NATS: ${nats.message}` : (err as Error).message}${code}`);
    return EXIT_STATUS.E_NATS;
  }
  // Not one of ours: a bug. The stack helps whoever reports it.
  console.error(`picoclaw: ${(err as Error)?.stack ?? String(err)}`);
  return 1;
}

/** The nats.js error in `err`'s cause chain, if any. */
function natsErrorIn(err: unknown): Error | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) if (e.name === "NatsError") return e;
  return undefined;
}

function print(text: string): number {
  console.log(text);
  return 0;
}

async function runCheckNats(loaded: LoadedConfig): Promise<number> {
  const cfg = loaded.config;
  if (cfg.swarm.nats.embedded) {
    const n = cfg.swarm.nats;
    const host = ["0.0.0.0", "::"].includes(n.embedded_host) ? "127.0.0.1" : n.embedded_host;
    cfg.swarm.nats.urls = [`nats://${host}:${n.embedded_port}`];
  }
  const checks = await checkNats(cfg);
  console.log(formatChecks(cfg, checks));
  return checks.every((c) => !c.problem) ? 0 : 1;
}

export function usage(entry: Entry): string {
  const keys = configKeys().map((k) => `  --${k}`);
  const cmds = Object.entries(COMMAND_FLAGS).map(([f, d]) => `  --${f.padEnd(18)} ${d}`);
  const commands = Object.entries(entry.commands ?? {}).flatMap(([, c]) => c.usage);
  return [
    `Usage: ${entry.name} [command] [flags]`,
    "",
    "Commands:",
    `  (none)              ${entry.usage}`,
    "  config              print the effective config, with the source of each value (secrets redacted)",
    ...commands,
    "",
    "Flags:",
    ...cmds,
    "  --config PATH        config file (default ~/.picoclaw/config.yaml)",
    "",
    "Config flags (each also PICOCLAW_<KEY> in the environment, e.g. PICOCLAW_SWARM_NATS_URLS):",
    ...keys,
    "",
    "Durations: 500ms, 10s, 2m. Lists: comma-separated (code,research).",
  ].join("\n");
}
