// Command line shared by every entry script: dotted config flags (`--swarm.role worker`) plus a few
// command flags. citty parses; this module declares what exists, which executable and command takes
// each flag, and rejects the rest as usage errors naming where it does belong.
import { parseArgs } from "citty";
import { checkNats, formatChecks } from "./check-nats.ts";
import {
  canonicalKey,
  configDefaults,
  DURATION_KEYS,
  describeConfig,
  formatDurationExact,
  isConfigKey,
  type LoadedConfig,
  loadConfig,
} from "./config.ts";
import { BOOLEAN_KEYS, CONFIG_HELP, configKeys } from "./config-schema.ts";
import { ConfigError, type ErrorCode, isPicoclawError, UsageError } from "./errors.ts";
import type { Role } from "./messages.ts";
import { VERSION } from "./version.ts";

interface FlagSpec {
  /** What the flag does, one line. */
  help: string;
  /** Placeholder of its value; none: a switch. */
  arg?: string;
  /** Which executable (and command) has it, for "--x is a flag of ..." errors; none: every executable. */
  home?: string;
}

/** Flags that choose what to do rather than configure the node. */
export const FLAGS = {
  help: { help: "show this help" },
  version: { help: "print the version" },
  config: { arg: "PATH", help: "the config file (default ~/.picoclaw/config.yaml; also PICOCLAW_CONFIG)" },
  "swarm.check-nats": {
    help: "check every configured NATS URL (reachable, JetStream, version, round trip) and exit",
    home: "picoclaw and of each role executable, without a command",
  },
  "swarm.dashboard": {
    help: "run the node with its dashboard on this terminal (--once: one frame, --json: one snapshot)",
    home: "picoclaw",
  },
  once: { help: "print one frame and exit", home: "picoclaw dashboard (or picoclaw-dashboard)" },
  json: {
    help: "print JSON instead of text (the dashboard: one snapshot, then exit)",
    home: "picoclaw submit, watch, requests, approvals and dashboard (or picoclaw-dashboard)",
  },
  failed: { help: "only the requests that ended failed", home: "picoclaw requests" },
  public: { help: "print the public key of an existing key file (creates nothing)", home: "picoclaw keygen" },
  file: { arg: "PATH", help: "add a file or diff to the request", home: "picoclaw submit" },
  plan: { arg: "PATH", help: "an explicit plan: a DAG in YAML or JSON", home: "picoclaw submit" },
  capabilities: { arg: "a,b", help: "one sub-task per capability", home: "picoclaw submit" },
  note: { arg: "TEXT", help: "a note kept with the approval (who decided and why)", home: "picoclaw approve" },
  reason: { arg: "TEXT", help: "why the call is denied: the model gets `denied: TEXT`", home: "picoclaw deny" },
  timeout: {
    arg: "D",
    help: "how long to wait for the answer (submit: also the request's own deadline); default swarm.tasks.request_timeout",
    home: "picoclaw submit and watch",
  },
} as const satisfies Record<string, FlagSpec>;
export type Flag = keyof typeof FLAGS;
type ValueFlag = { [F in Flag]: (typeof FLAGS)[F] extends { arg: string } ? F : never }[Flag];
type SwitchFlag = Exclude<Flag, ValueFlag>;

/** Flags every executable takes, with or without a command. */
const EVERYWHERE: readonly Flag[] = ["help", "version", "config"];

/** The all-in-one's commands, for "submit is a command of picoclaw, not of picoclaw-worker". */
export const COMMAND_HOMES: Record<string, string> = {
  submit: "picoclaw",
  watch: "picoclaw",
  requests: "picoclaw",
  approvals: "picoclaw",
  approve: "picoclaw",
  deny: "picoclaw",
  drain: "picoclaw",
  shutdown: "picoclaw",
  ping: "picoclaw",
  health: "picoclaw",
  keygen: "picoclaw",
  dashboard: "picoclaw (or run picoclaw-dashboard)",
  gateway: "picoclaw (or run picoclaw-gateway)",
};

export interface Cli {
  /** First positional word (`config`, `submit`, ...) or undefined for "run the node". */
  command?: string;
  positionals: string[];
  /** Config-key flags, canonical dotted keys. */
  flags: Record<string, unknown>;
  /** The non-config flags given, in order. */
  given: Flag[];
  configPath?: string;
  /** Value of a non-config flag such as `--plan PATH`. */
  value(flag: Exclude<ValueFlag, "config">): string | undefined;
  is(flag: SwitchFlag): boolean;
}

const isFlag = (name: string): name is Flag => Object.hasOwn(FLAGS, name);
const takesValue = (flag: Flag): flag is ValueFlag => "arg" in FLAGS[flag];

/**
 * `--swarm.max-concurrent 3` -> `--swarm.max_concurrent 3`; `--swarm.enabled true` -> `--swarm.enabled=true`;
 * `--plan p.yaml` -> `--plan=p.yaml`. Unknown flags are usage errors.
 */
function normalize(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === "-h") {
      out.push("--help");
      continue;
    }
    if (/^-[A-Za-z]/.test(tok)) throw new UsageError(`unknown flag ${tok} (flags are long: --name)`);
    if (tok === "--") {
      // Everything after `--` is an argument (`submit -- --text that starts with dashes`).
      out.push(...argv.slice(i));
      break;
    }
    if (!tok.startsWith("--")) {
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
    } else if (isFlag(name) && takesValue(name)) {
      const next = argv[i + 1];
      if (value !== undefined) out.push(`--${name}=${value}`);
      else if (next !== undefined && (next === "-" || !next.startsWith("-"))) {
        out.push(`--${name}=${next}`);
        i++;
      } else throw new UsageError(`--${name} needs a value: --${name} ${FLAGS[name].arg}`);
    } else if (isFlag(name)) {
      // `--public=PATH` reads as `--public PATH`; other switches take no value.
      if (value !== undefined && name !== "public") throw new UsageError(`--${name} takes no value (got --${name}=${value})`);
      out.push(`--${name}`);
      if (value !== undefined) out.push(value);
    } else {
      const near = nearest(name);
      throw new UsageError(`unknown flag --${name}${near ? ` (did you mean --${near}?)` : ""}`);
    }
  }
  return out;
}

/** The known flag closest to a mistyped one (at most 2 edits away, or 3 for long names). */
function nearest(name: string): string | undefined {
  const typed = canonicalKey(name);
  let best: { name: string; d: number } | undefined;
  for (const known of [...configKeys(), ...Object.keys(FLAGS)]) {
    const d = editDistance(typed, canonicalKey(known));
    if (d <= (known.length > 12 ? 3 : 2) && (!best || d < best.d)) best = { name: known, d };
  }
  return best?.name;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

export function parseCli(argv: string[]): Cli {
  const args: Record<string, { type: "boolean" | "string" }> = {};
  for (const key of configKeys()) {
    args[key] = { type: (BOOLEAN_KEYS as readonly string[]).includes(key) ? "boolean" : "string" };
  }
  for (const f of Object.keys(FLAGS) as Flag[]) args[f] = { type: takesValue(f) ? "string" : "boolean" };
  const normalized = normalize(argv);
  const parsed = parseArgs(normalized, args as never) as Record<string, unknown> & { _: string[] };
  const end = normalized.indexOf("--");
  const options = end < 0 ? normalized : normalized.slice(0, end);
  const has = (name: string) => options.some((t) => t === `--${name}` || t.startsWith(`--${name}=`));
  const flags: Record<string, unknown> = {};
  for (const key of configKeys()) if (parsed[key] !== undefined && has(key)) flags[key] = parsed[key];
  const given = (Object.keys(FLAGS) as Flag[]).filter(has);
  const positionals = parsed._.map(String);
  return {
    command: positionals[0],
    positionals: positionals.slice(1),
    flags,
    given,
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

/** A command of an entry script (`submit`, `drain`, ...): its help lines, correct form and flags, and what it does. */
export interface Command {
  usage: string[];
  /** The correct form(s) without the executable's name, for usage errors: `["keygen [PATH]", "keygen --public [PATH]"]`. */
  form: string[];
  /** The flags it takes beyond --help, --version, --config and the config flags. */
  flags?: Flag[];
  /** Most words after the command (default: any number). */
  maxArgs?: number;
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
  /** The flags running without a command takes, beyond --swarm.check-nats (e.g. --once, --json). */
  flags?: Flag[];
  /** The correct form of running without a command, without the name (default: its flags, then config flags). */
  form?: string;
  /** In help, what the entry's own flags go with when it also has commands ("--swarm.dashboard"). */
  flagsWith?: string;
  commands?: Record<string, Command>;
}

/**
 * Exit status per error code: 2 bad input, 4 NATS unreachable or unusable, 1 anything else that stops
 * us (submit also exits 1 for a failed or rejected request and 3 when no answer came in time).
 */
const EXIT_STATUS: Record<ErrorCode, number> = {
  E_CONFIG: 2,
  E_USAGE: 2,
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
export const EXIT = { ok: 0, failed: 1, badInput: 2, noAnswer: 3, nats: 4, unknownRequest: 5 } as const;

/** Who is reporting a usage error and the correct form to show: the executable, or one of its commands. */
interface UsageContext {
  program: string;
  forms: string[];
  help: string;
}

/** Every entry script's life: parse, check usage, load config, dispatch, and turn errors into one line and an exit status. */
export async function runEntry(argv: string[], entry: Entry): Promise<number> {
  let context = entryContext(entry);
  try {
    const cli = parseCli(argv);
    if (cli.is("help")) return print(usage(entry));
    if (cli.is("version")) return print(`picoclaw ${VERSION}`);
    const command = checkUsage(cli, entry);
    if (command) context = command;
    const loaded = loadForCli(cli, process.env, entry.role);
    if (cli.command === "config") return print(describeConfig(loaded));
    if (cli.command !== undefined) return await entry.commands![cli.command]!.run(cli, loaded);
    if (cli.is("swarm.check-nats")) return await runCheckNats(loaded);
    return await entry.run(cli, loaded);
  } catch (err) {
    // A flag the parser refused (before the command was known): shown with the command's form when one was given.
    const named = argv.find((a) => entry.commands && Object.hasOwn(entry.commands, a));
    if (err instanceof UsageError && named && context.program === entry.name) context = commandContext(entry, named);
    return reportError(err, context);
  }
}

function commandContext(entry: Entry, name: string): UsageContext {
  const command = entry.commands![name]!;
  return { program: `${entry.name} ${name}`, forms: command.form.map((f) => `${entry.name} ${f}`), help: `${entry.name} --help` };
}

function entryContext(entry: Entry): UsageContext {
  const own = (entry.flags ?? []).map((f) => `[--${f}] `).join("");
  const forms = [`${entry.name} ${entry.form ?? `${own}[--KEY VALUE ...]`}`, `${entry.name} --swarm.check-nats`, `${entry.name} config`];
  if (entry.commands) forms.push(`${entry.name} COMMAND ... (${Object.keys(entry.commands).join(", ")})`);
  return { program: entry.name, forms, help: `${entry.name} --help` };
}

/** Rejects what this executable (or the command) does not take, naming where it is; returns the command's context. */
function checkUsage(cli: Cli, entry: Entry): UsageContext | undefined {
  const name = cli.command;
  let allowed: readonly Flag[];
  let context: UsageContext | undefined;
  if (name === undefined) {
    allowed = [...EVERYWHERE, "swarm.check-nats", ...(entry.flags ?? [])];
  } else if (name === "config") {
    allowed = EVERYWHERE;
    context = {
      program: `${entry.name} config`,
      forms: [`${entry.name} config [--config PATH] [--KEY VALUE ...]`],
      help: `${entry.name} --help`,
    };
  } else {
    const command = entry.commands?.[name];
    if (!command) {
      const home = COMMAND_HOMES[name];
      if (home) throw new UsageError(`${name} is a command of ${home}, not of ${entry.name}`);
      const known = ["config", ...Object.keys(entry.commands ?? {})].join(", ");
      throw new UsageError(`unknown command ${JSON.stringify(name)}: ${entry.name} takes ${known}, or no command to ${entry.usage}`);
    }
    allowed = [...EVERYWHERE, ...(command.flags ?? [])];
    context = commandContext(entry, name);
  }
  const where = context ?? entryContext(entry);
  // --swarm.dashboard last: with --once or --json the one-shot dashboard is meant, and those name it.
  const given = [...cli.given].sort((a, b) => Number(a === "swarm.dashboard") - Number(b === "swarm.dashboard"));
  for (const flag of given) {
    if (allowed.includes(flag)) continue;
    const home: string | undefined = (FLAGS[flag] as FlagSpec).home;
    const hint =
      flag === "swarm.dashboard" && entry.role
        ? `; a ${entry.role} with its dashboard: picoclaw --swarm.role ${entry.role} --swarm.dashboard`
        : "";
    throw new UsageError(`--${flag} is a flag of ${home ?? "other commands"}, not of ${where.program}${hint}`, where);
  }
  const maxArgs = name === "config" ? 0 : name === undefined ? undefined : entry.commands?.[name]?.maxArgs;
  if (maxArgs !== undefined && cli.positionals.length > maxArgs) {
    const extra = cli.positionals.slice(maxArgs).map((a) => JSON.stringify(a));
    throw new UsageError(`unexpected argument${extra.length > 1 ? "s" : ""} ${extra.join(" ")}`, where);
  }
  return context;
}

/**
 * One clear line on stderr; the exit status comes from the error's code. A usage error names the
 * executable (and command) and shows the correct form.
 */
export function reportError(err: unknown, context: UsageContext = { program: "picoclaw", forms: [], help: "picoclaw --help" }): number {
  if (err instanceof UsageError) {
    const forms = err.where.forms ?? context.forms;
    const lines = [
      `${err.where.program ?? context.program}: ${err.message}`,
      ...forms.map((f, i) => `${i === 0 ? "usage:" : "      "} ${f}`),
    ];
    console.error([...lines, `(${context.help} lists every command and flag)`].join("\n"));
    return EXIT_STATUS[err.code];
  }
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

/** A default as help shows it: durations as written, lists comma-separated. */
function shownDefault(key: string, value: unknown): string {
  if (value === undefined) return "unset";
  if (DURATION_KEYS.has(key) && typeof value === "number") return formatDurationExact(value);
  if (Array.isArray(value)) return value.length === 0 ? "none" : value.join(",");
  if (typeof value === "object" && value !== null) return Object.keys(value).length === 0 ? "none" : JSON.stringify(value);
  if (value === "") return "empty";
  return String(value);
}

/** `--help`: only what this executable takes, and every config flag with its meaning and default. */
export function usage(entry: Entry): string {
  const cmdWidth = 20;
  const commands = Object.values(entry.commands ?? {}).flatMap((c) => c.usage);
  // Each flag this executable takes, and (in an executable with commands) what it goes with.
  const contexts = new Map<Flag, string[]>();
  const add = (flag: Flag, ctx: string) => contexts.set(flag, [...(contexts.get(flag) ?? []), ctx]);
  for (const f of EVERYWHERE) contexts.set(f, []);
  add("swarm.check-nats", "");
  for (const f of entry.flags ?? []) add(f, entry.flagsWith ?? "");
  for (const [name, c] of Object.entries(entry.commands ?? {})) for (const f of c.flags ?? []) add(f, name);
  const flagLines = [...contexts].map(([flag, ctx]) => {
    const spec: FlagSpec = FLAGS[flag];
    const left = `--${flag}${spec.arg ? ` ${spec.arg}` : ""}`;
    const withs = ctx.filter((c) => c !== "" && c !== `--${flag}`);
    const suffix = entry.commands && withs.length > 0 ? ` (with ${withs.join(", ")})` : "";
    return `  ${left.padEnd(cmdWidth - 1)} ${spec.help}${suffix}`;
  });
  const defaults = configDefaults();
  const keys = configKeys();
  const width = Math.max(...keys.map((k) => k.length)) + 3;
  const keyLines = keys.map((k) => {
    let dflt = `default ${shownDefault(k, defaults[k])}`;
    if (entry.role && k === "swarm.role") dflt = `${entry.role} in ${entry.name}`;
    if (entry.role && k === "swarm.enabled") dflt = `true in ${entry.name}`;
    return `  ${`--${k}`.padEnd(width)} ${CONFIG_HELP[k] ?? ""} (${dflt})`;
  });
  return [
    `Usage: ${entry.name} ${entry.commands ? "[command]" : "[config]"} [flags]`,
    "",
    "Commands:",
    `  ${"(none)".padEnd(cmdWidth)}${entry.usage}`,
    `  ${"config".padEnd(cmdWidth)}print the effective config, with the source of each value (secrets redacted)`,
    ...commands,
    "",
    "Flags:",
    ...flagLines,
    "",
    "Config flags: --KEY VALUE (dashes work as underscores: --swarm.nats.embedded-port), also PICOCLAW_<KEY>",
    "in the environment (PICOCLAW_SWARM_NATS_URLS) or KEY in the config file. Durations: 500ms, 10s, 2m, 1h.",
    "Lists: comma-separated (code,research).",
    ...keyLines,
  ].join("\n");
}
