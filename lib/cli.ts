// Command line shared by every entry script: dotted config flags (`--swarm.role worker`) plus a few
// command flags. citty parses; this module declares what exists and rejects what does not.
import { parseArgs } from "citty";
import type { Role } from "./config.ts";
import { canonicalKey, isConfigKey, type LoadedConfig, loadConfig } from "./config.ts";
import { BOOLEAN_KEYS, configKeys } from "./config-schema.ts";
import { ConfigError } from "./errors.ts";

/** Flags that choose what to do rather than configure the node. */
const COMMAND_FLAGS = {
  "swarm.dashboard": "show the swarm dashboard (live; --once for one frame, --json for a snapshot)",
  "swarm.check-nats": "check every configured NATS URL: reachable, JetStream, version, round trip",
  once: "with --swarm.dashboard: print one frame and exit",
  json: "machine-readable output",
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

export function usage(entry: string): string {
  const keys = configKeys().map((k) => `  --${k}`);
  const cmds = Object.entries(COMMAND_FLAGS).map(([f, d]) => `  --${f.padEnd(18)} ${d}`);
  return [
    `Usage: ${entry} [command] [flags]`,
    "",
    "Commands:",
    "  (none)              run a swarm node of --swarm.role (coordinator | worker | specialist)",
    "  config              print the effective config, with the source of each value (secrets redacted)",
    "  submit TEXT         send a request to the swarm, follow its sub-tasks live, print the answer",
    "                      TEXT may be '-' (stdin); --file PATH adds a file or diff; --plan PATH gives an",
    "                      explicit DAG (YAML/JSON); --capabilities a,b one sub-task per capability;",
    "                      --timeout 10m; --json prints the event stream as JSON lines",
    "  drain NODE          ask a node to stop taking sub-tasks, finish running ones (swarm.drain_grace),",
    "                      hand back the rest and leave (as SIGTERM does); for rolling upgrades",
    "  shutdown NODE       the same without waiting: running sub-tasks are handed back at once",
    "  ping NODE           check that a node answers",
    "  keygen [PATH]       create a signing key pair (seed to PATH, default ~/.picoclaw/signing.nk; prints the public key)",
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
