#!/usr/bin/env bun
// The all-in-one: every command of the deployment guide as written. Without a command it runs a node
// of the role from --swarm.role / PICOCLAW_SWARM_ROLE / swarm.role (swarm mode must be on); with
// --swarm.dashboard it shows the dashboard (this node's own view when swarm mode is on). The client
// commands (submit, drain, shutdown, ping, keygen) live only here, not in the per-role executables.
import { type Cli, runEntry } from "../lib/cli.ts";
import type { LoadedConfig } from "../lib/config.ts";
import { ConfigError, UsageError } from "../lib/errors.ts";
import { createLogger } from "../lib/log.ts";
import { type MemberNode, serveMember } from "../lib/node.ts";
import { runCoordinator } from "./coordinator.ts";
import { dashboardLogger, observeSwarm, showDashboard, showOptions } from "./dashboard.ts";
import { runGateway } from "./gateway.ts";
import { runApprovals, runDecision } from "./picoclaw/approvals.ts";
import { runControlCommand } from "./picoclaw/control.ts";
import { runHealthCheck } from "./picoclaw/health.ts";
import { defaultKeyPath, generateKeyFile, publicKeyOf } from "./picoclaw/keygen.ts";
import { runRequests } from "./picoclaw/requests.ts";
import { runSubmit, submitOptions, timeoutOption } from "./picoclaw/submit.ts";
import { runWatch } from "./picoclaw/watch.ts";
import { runWorker, workerCapabilities } from "./worker.ts";

/** Role scripts imply swarm mode; so does a role given on the command line (the guide's role examples). */
function swarmEnabled({ config, sources }: LoadedConfig): boolean {
  if (config.swarm.enabled) return true;
  return sources["swarm.enabled"] === "default" && (sources["swarm.role"] ?? "").startsWith("flag");
}

/** Sets up the configured role's work on a started member. */
async function runRole(node: MemberNode): Promise<void> {
  const cfg = node.config;
  if (cfg.swarm.role === "coordinator") return runCoordinator(node);
  return runWorker(node, cfg.swarm.role === "worker" ? workerCapabilities(cfg.swarm.capabilities) : cfg.swarm.capabilities);
}

async function run(cli: Cli, loaded: LoadedConfig): Promise<number> {
  const cfg = loaded.config;
  const dashboard = cli.is("swarm.dashboard");
  for (const flag of ["once", "json"] as const) {
    if (cli.is(flag) && !dashboard) throw new UsageError(`--${flag} goes with --swarm.dashboard (or: picoclaw dashboard --${flag})`);
  }
  if (dashboard && !swarmEnabled(loaded)) return observeSwarm(loaded, showOptions(cli));
  if (!swarmEnabled(loaded)) {
    throw new ConfigError(
      "swarm.enabled",
      loaded.sources["swarm.enabled"] ?? "default",
      "true to run a swarm node: pass --swarm.enabled, set PICOCLAW_SWARM_ENABLED=true, or swarm.enabled: true in the config file",
      cfg.swarm.enabled,
    );
  }
  if (!dashboard) return serveMember(cfg, createLogger(cfg.log.level), runRole);
  const show = showOptions(cli);
  return serveMember(cfg, dashboardLogger(cfg.log.level, show), runRole, (node, signalled) => showDashboard(node, show, signalled));
}

/** The command's one argument: a node id (`drain claw-1a2b3c4d`) or a request id (`watch r-…`). */
const nodeArgument = (cli: Cli, what: string, example: string) => {
  const id = cli.positionals[0];
  if (!id) throw new UsageError(`which ${what}? e.g. picoclaw ${cli.command} ${example}`);
  return id;
};
const NODE = ["node", "claw-1a2b3c4d"] as const;

if (import.meta.main) {
  process.exit(
    await runEntry(process.argv.slice(2), {
      name: "picoclaw",
      usage: "run a swarm node of --swarm.role (coordinator | worker | specialist)",
      run,
      flags: ["swarm.dashboard", "once", "json"],
      form: "[--swarm.dashboard [--once | --json]] [--KEY VALUE ...]",
      flagsWith: "--swarm.dashboard",
      commands: {
        submit: {
          usage: [
            "  submit TEXT         send a request to the swarm, follow its sub-tasks live, print the answer",
            "                      TEXT may be '-' (stdin); --file PATH adds a file or diff; --plan PATH gives an",
            "                      explicit DAG (YAML/JSON); --capabilities a,b one sub-task per capability;",
            "                      --timeout D gives it its own deadline (default swarm.tasks.request_timeout, 30m);",
            "                      --json prints the event stream as JSON lines",
          ],
          form: ["submit TEXT|- [--file PATH] [--plan PATH] [--capabilities a,b] [--timeout D] [--json]"],
          flags: ["file", "plan", "capabilities", "timeout", "json"],
          run: async (cli, loaded) =>
            runSubmit(loaded.config, createLogger("warn"), await submitOptions(cli, loaded.config.swarm.tasks.max_prompt_bytes)),
        },
        watch: {
          usage: [
            "  watch REQUEST-ID    re-attach to a request: print its stored answer, or follow it until it comes",
            "                      (--timeout, default swarm.tasks.request_timeout; --json prints the events)",
          ],
          form: ["watch REQUEST-ID [--timeout D] [--json]"],
          flags: ["timeout", "json"],
          maxArgs: 1,
          run: (cli, loaded) =>
            runWatch(loaded.config, createLogger("warn"), nodeArgument(cli, "request", "r-1a2b3c4d5e"), cli.is("json"), timeoutOption(cli)),
        },
        requests: {
          usage: [
            "  requests            list recent requests with their status; --failed: only those that ended failed",
            "                      (dead letters marked); --json for JSON lines",
          ],
          form: ["requests [--failed] [--json]"],
          flags: ["failed", "json"],
          maxArgs: 0,
          run: (cli, loaded) => runRequests(loaded.config, createLogger("warn"), { failed: cli.is("failed"), json: cli.is("json") }),
        },
        approvals: {
          usage: [
            "  approvals           list the tool calls waiting for a person (tools.approval.required), oldest first;",
            "                      --json: one JSON object per line (id, request, task, node, tool, arguments, ...)",
          ],
          form: ["approvals [--json]"],
          flags: ["json"],
          maxArgs: 0,
          run: (cli, loaded) => runApprovals(loaded.config, createLogger("warn"), cli.is("json")),
        },
        approve: {
          usage: ["  approve ID          let a waiting tool call run (--note TEXT is kept with the decision); the first decision counts"],
          form: ["approve ID [--note TEXT]"],
          flags: ["note"],
          maxArgs: 1,
          run: (cli, loaded) =>
            runDecision(loaded.config, createLogger("warn"), "approved", nodeArgument(cli, "call", "ap-3f9a0c1b2d"), cli.value("note")),
        },
        deny: {
          usage: ["  deny ID             refuse a waiting tool call: the model gets `denied: REASON` (--reason TEXT) and goes on"],
          form: ["deny ID [--reason TEXT]"],
          flags: ["reason"],
          maxArgs: 1,
          run: (cli, loaded) =>
            runDecision(loaded.config, createLogger("warn"), "denied", nodeArgument(cli, "call", "ap-3f9a0c1b2d"), cli.value("reason")),
        },
        dashboard: {
          usage: [
            "  dashboard           observe the swarm without joining it, as picoclaw-dashboard (--once: one frame;",
            "                      --json: one snapshot; with --swarm.http.listen also the web dashboard)",
          ],
          form: ["dashboard [--once | --json]"],
          flags: ["once", "json"],
          maxArgs: 0,
          run: (cli, loaded) => observeSwarm(loaded, showOptions(cli)),
        },
        drain: {
          usage: [
            "  drain NODE          ask a node to stop taking sub-tasks, finish running ones (swarm.drain_grace),",
            "                      hand back the rest and leave (as SIGTERM does); for rolling upgrades",
          ],
          form: ["drain NODE"],
          maxArgs: 1,
          run: (cli, loaded) => runControlCommand(loaded.config, createLogger("warn"), "drain", nodeArgument(cli, ...NODE)),
        },
        shutdown: {
          usage: ["  shutdown NODE       the same without waiting: running sub-tasks are handed back at once"],
          form: ["shutdown NODE"],
          maxArgs: 1,
          run: (cli, loaded) => runControlCommand(loaded.config, createLogger("warn"), "shutdown", nodeArgument(cli, ...NODE)),
        },
        ping: {
          usage: ["  ping NODE           check that a node answers"],
          form: ["ping NODE"],
          maxArgs: 1,
          run: (cli, loaded) => runControlCommand(loaded.config, createLogger("warn"), "ping", nodeArgument(cli, ...NODE)),
        },
        gateway: {
          usage: [
            "  gateway             serve the OpenAI API on --swarm.http.listen: GET /v1/models, POST /v1/chat/completions",
            "                      (streaming or not); keys in swarm.gateway.api_keys (required beyond loopback)",
          ],
          form: ["gateway --swarm.http.listen HOST:PORT"],
          maxArgs: 0,
          run: (_cli, loaded) => runGateway(loaded),
        },
        health: {
          usage: ["  health              ask this machine's node for /healthz on --swarm.http.listen (exit 0 when healthy)"],
          form: ["health --swarm.http.listen HOST:PORT"],
          maxArgs: 0,
          run: (_cli, loaded) => runHealthCheck(loaded.config, loaded.sources["swarm.http.listen"] ?? "default"),
        },
        keygen: {
          usage: [
            "  keygen [PATH]       create a signing key pair: the seed to PATH (default ~/.picoclaw/signing.nk, never",
            "                      overwritten), the public key printed; --public [PATH]: print an existing key's public key",
          ],
          form: ["keygen [PATH]", "keygen --public [PATH]"],
          flags: ["public"],
          maxArgs: 1,
          async run(cli) {
            const path = cli.positionals[0] ?? defaultKeyPath();
            if (cli.is("public")) {
              console.log(publicKeyOf(path));
              return 0;
            }
            const pub = generateKeyFile(path);
            console.log(`wrote the seed to ${path} (readable by you only; keep it secret)\npublic key: ${pub}`);
            return 0;
          },
        },
      },
    }),
  );
}
