// What every entry script does after parsing: dispatch to a command, and turn errors into exit codes.

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { checkNats, formatChecks } from "./check-nats.ts";
import { type Cli, loadForCli, parseCli, usage } from "./cli.ts";
import { describeConfig, type LoadedConfig, type Role } from "./config.ts";
import { runControlCommand } from "./control.ts";
import { runDashboard } from "./dashboard-live.ts";
import { parseDuration } from "./duration.ts";
import { ConfigError, InvalidIdError, JetStreamMissingError, NatsConnectError, NatsServerMissingError } from "./errors.ts";
import { isValidId } from "./ids.ts";
import { createLogger } from "./log.ts";
import { startNode } from "./node.ts";
import { PlanError, parsePlanText } from "./plan.ts";
import { untilStopSignal } from "./signals.ts";
import { generateKeyFile } from "./signing.ts";
import { runSubmit, type SubmitOptions } from "./submit.ts";
import { VERSION } from "./version.ts";

export interface EntryOptions {
  /** Script name for help text. */
  entry: string;
  /** Per-role scripts fix the role and imply swarm.enabled. */
  role?: Role;
  /** roles/dashboard.ts: the dashboard is the default action. */
  dashboard?: boolean;
}

export async function main(argv: string[], o: EntryOptions): Promise<number> {
  try {
    const cli = parseCli(argv);
    if (cli.is("help")) return print(usage(o.entry));
    if (cli.is("version")) return print(`picoclaw ${VERSION}`);
    const loaded = loadForCli(cli, process.env, o.role);
    if (cli.command === "config") return print(describeConfig(loaded));
    if (cli.command === "submit")
      return await runSubmit(loaded.config, createLogger("warn"), await submitOptions(cli, loaded.config.swarm.tasks.max_prompt_bytes));
    if (cli.command === "keygen") {
      const path = cli.positionals[0] ?? join(homedir(), ".picoclaw", "signing.nk");
      const pub = generateKeyFile(path);
      return print(`wrote the seed to ${path} (readable by you only; keep it secret)\npublic key: ${pub}`);
    }
    if (cli.command === "drain" || cli.command === "shutdown" || cli.command === "ping") {
      const node = cli.positionals[0];
      if (!node) throw new ConfigError(cli.command, "command line", `a node id: picoclaw ${cli.command} claw-1a2b3c4d`);
      return await runControlCommand(loaded.config, createLogger("warn"), cli.command, node);
    }
    if (cli.command !== undefined) {
      throw new ConfigError(
        cli.command,
        "command line",
        "a command: config, submit, drain, shutdown, ping or keygen (or none to run a node)",
      );
    }
    if (cli.is("swarm.check-nats")) return await runCheckNats(loaded);
    if (o.dashboard || cli.is("swarm.dashboard")) return await runDashboard(loaded, cli, swarmEnabled(loaded, o));
    return await runNode(loaded, o);
  } catch (err) {
    return reportError(err);
  }
}

/** Role scripts imply swarm mode; so does a role given on the command line (the guide's role examples). */
function swarmEnabled(loaded: LoadedConfig, o: EntryOptions): boolean {
  const { config, sources } = loaded;
  if (o.role) return true;
  if (config.swarm.enabled) return true;
  return sources["swarm.enabled"] === "default" && (sources["swarm.role"] ?? "").startsWith("flag");
}

async function runNode(loaded: LoadedConfig, o: EntryOptions): Promise<number> {
  const { config } = loaded;
  if (!swarmEnabled(loaded, o)) {
    throw new ConfigError(
      "swarm.enabled",
      loaded.sources["swarm.enabled"] ?? "default",
      "true to run a swarm node: pass --swarm.enabled, set PICOCLAW_SWARM_ENABLED=true, or swarm.enabled: true in the config file",
      config.swarm.enabled,
    );
  }
  const log = createLogger(config.log.level);
  // Listen before starting: a signal during start-up still ends in a clean leave.
  const signalled = untilStopSignal(log);
  const node = await startNode(config, log);
  const why = await Promise.race([signalled, node.stopRequested]);
  // `shutdown` over NATS hands running work back at once; a signal or `drain` gives it drain_grace.
  await node.stop(why === "shutdown" ? 0 : config.swarm.drain_grace);
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

/** `submit` arguments: text (or '-' for stdin), --file, --plan, --capabilities, --timeout, --json. */
async function submitOptions(cli: Cli, maxPromptBytes: number): Promise<SubmitOptions> {
  let text = cli.positionals.join(" ").trim();
  if (text === "-") text = (await Bun.stdin.text()).trim();
  const file = cli.value("file");
  if (file !== undefined) {
    let body: string;
    try {
      body = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError("--file", "command line", "a readable file", `${file} (${(err as Error).message})`);
    }
    text = text ? `${text}\n\n--- ${file} ---\n${body}` : `Review this change (${file}):\n\n${body}`;
  }
  const planPath = cli.value("plan");
  let plan: unknown;
  if (planPath !== undefined) {
    let raw: string;
    try {
      raw = readFileSync(planPath, "utf8");
    } catch (err) {
      throw new ConfigError("--plan", "command line", "a readable YAML or JSON plan file", `${planPath} (${(err as Error).message})`);
    }
    plan = parsePlanText(raw, planPath);
    if (!text) text = `Plan ${planPath}`;
  }
  if (!text) throw new ConfigError("submit", "command line", "a request text, '-' for stdin, --file PATH or --plan PATH");
  const size = new TextEncoder().encode(text).length;
  if (size > maxPromptBytes) {
    throw new ConfigError(
      "submit",
      "command line",
      `a request of at most swarm.tasks.max_prompt_bytes (${maxPromptBytes} bytes); raise that key on the coordinator and here, or send less`,
      `${size} bytes`,
    );
  }
  const caps = cli
    .value("capabilities")
    ?.split(",")
    .map((c) => c.trim())
    .filter((c) => c !== "");
  for (const c of caps ?? []) {
    if (!isValidId(c))
      throw new ConfigError("--capabilities", "command line", "capability names of 1-64 characters from A-Z a-z 0-9 _ -", c);
  }
  const timeoutText = cli.value("timeout") ?? "10m";
  const timeoutMs = parseDuration(timeoutText);
  if (timeoutMs === undefined || timeoutMs <= 0)
    throw new ConfigError("--timeout", "command line", "a duration like 30s or 10m", timeoutText);
  return { text, plan, capabilities: caps, json: cli.is("json"), timeoutMs };
}

function print(text: string): number {
  console.log(text);
  return 0;
}

/** Exit 2 for bad input (config, flags, ids), 1 for everything else; one clear line either way. */
export function reportError(err: unknown): number {
  if (err instanceof ConfigError || err instanceof InvalidIdError || err instanceof PlanError) {
    console.error(`picoclaw: ${err.message}`);
    return 2;
  }
  if (err instanceof NatsConnectError || err instanceof NatsServerMissingError || err instanceof JetStreamMissingError) {
    console.error(`picoclaw: ${err.message}`);
    return 1;
  }
  console.error(`picoclaw: ${(err as Error)?.stack ?? String(err)}`);
  return 1;
}

export { type Cli, parseCli };
