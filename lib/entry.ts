// What every entry script does after parsing: dispatch to a command, and turn errors into exit codes.
import { type Cli, loadForCli, parseCli, usage } from "./cli.ts";
import { checkNats, formatChecks } from "./check-nats.ts";
import { describeConfig, type LoadedConfig, type Role } from "./config.ts";
import { runDashboard } from "./dashboard-live.ts";
import { ConfigError, InvalidIdError, NatsConnectError, NatsServerMissingError } from "./errors.ts";
import { createLogger } from "./log.ts";
import { startNode, untilStopSignal } from "./node.ts";
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
    if (cli.command !== undefined) {
      throw new ConfigError(cli.command, "command line", "a command: config (or no command to run a node)");
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
    throw new ConfigError("swarm.enabled", loaded.sources["swarm.enabled"] ?? "default",
      "true to run a swarm node: pass --swarm.enabled, set PICOCLAW_SWARM_ENABLED=true, or swarm.enabled: true in the config file",
      config.swarm.enabled);
  }
  const log = createLogger(config.log.level);
  const node = await startNode(config, log);
  await Promise.race([untilStopSignal(log), node.stopRequested]);
  await node.stop();
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

function print(text: string): number {
  console.log(text);
  return 0;
}

/** Exit 2 for bad input (config, flags, ids), 1 for everything else; one clear line either way. */
export function reportError(err: unknown): number {
  if (err instanceof ConfigError || err instanceof InvalidIdError) {
    console.error(`picoclaw: ${err.message}`);
    return 2;
  }
  if (err instanceof NatsConnectError || err instanceof NatsServerMissingError) {
    console.error(`picoclaw: ${err.message}`);
    return 1;
  }
  console.error(`picoclaw: ${(err as Error)?.stack ?? String(err)}`);
  return 1;
}

export { parseCli, type Cli };
