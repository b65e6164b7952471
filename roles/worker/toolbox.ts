// A node's tools: the built-in ones its config turns on and its MCP servers' tools, in one registry,
// with what /metrics counts of their calls. Started before the node joins (a required MCP server that
// fails stops start-up naming it), closed when the node stops.
import type { Config } from "../../lib/config.ts";
import { PicoclawError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { Metrics } from "../../lib/metrics.ts";
import type { McpHub } from "./mcp.ts";
import { builtinTools } from "./tools/builtin.ts";
import { bwrapCommand } from "./tools/exec.ts";
import { createRegistry, type ToolRegistry } from "./tools/index.ts";

/** Tool call durations (seconds): from a file read to a long test run. */
const TOOL_SECONDS_BUCKETS = [0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300];

export interface Toolbox {
  registry: ToolRegistry;
  workspace: string;
  /** Counts one finished call in /metrics. */
  observe(tool: string, outcome: string, seconds: number): void;
  close(): Promise<void>;
}

/** Throws a PicoclawError (E_TOOLS, one line) when a tool cannot be set up: the node does not start. */
export async function openToolbox(cfg: Config, node: string, log: Logger, metrics: Metrics): Promise<Toolbox> {
  try {
    return await open(cfg, node, log, metrics);
  } catch (err) {
    throw new PicoclawError("E_TOOLS", (err as Error)?.message ?? String(err), { cause: err });
  }
}

async function open(cfg: Config, node: string, log: Logger, metrics: Metrics): Promise<Toolbox> {
  const { tools, sandbox } = builtinTools(cfg, node);
  const isolate = cfg.tools.isolation.enabled;
  const mcp: McpHub | undefined =
    cfg.tools.mcp.enabled && Object.keys(cfg.tools.mcp.servers).length > 0
      ? // The MCP SDK is loaded only by a node that has servers: an idle worker stays small.
        await (await import("./mcp.ts")).startMcpServers(cfg.tools.mcp.servers, {
          log,
          workspace: sandbox.workspace,
          // Inside bubblewrap a server sees /usr, the workspace and the allow lists: where it is
          // installed outside /usr must be listed in tools.allow_read_paths.
          isolation: isolate
            ? (argv) =>
                bwrapCommand(sandbox.workspace, sandbox.workspace, argv, { readPaths: sandbox.readPaths, writePaths: sandbox.writePaths })
            : undefined,
        })
      : undefined;
  const registry = createRegistry(tools, () => mcp?.tools() ?? []);
  const calls = metrics.counter("picoclaw_tool_calls_total", "Tool calls of this node's sub-tasks, by tool and outcome.");
  const seconds = metrics.histogram(
    "picoclaw_tool_call_duration_seconds",
    "How long this node's tool calls took, by tool.",
    TOOL_SECONDS_BUCKETS,
  );
  if (registry.names().length > 0) {
    log.info("Tools ready", {
      workspace: sandbox.workspace,
      restrict_to_workspace: cfg.agents.defaults.restrict_to_workspace,
      isolation: isolate,
      tools: registry.names().join(","),
    });
  }
  return {
    registry,
    workspace: sandbox.workspace,
    observe(tool, outcome, s) {
      // A model can name any tool: an unknown name is counted under one label, not its own series.
      const label = registry.get(tool) ? tool : "(unknown)";
      calls.inc({ tool: label, outcome });
      seconds.observe(s, { tool: label });
    },
    close: async () => mcp?.close(),
  };
}
