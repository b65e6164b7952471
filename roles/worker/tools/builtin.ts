// A node's built-in tools from its config: the file tools, exec and web_fetch, each as PicoClaw's
// `tools:` section switches it, all sharing one sandbox rooted at the node's workspace.
import { join } from "node:path";
import { type Config, expandHome } from "../../../lib/config.ts";
import { createSandbox, type Sandbox } from "../sandbox.ts";
import { assertIsolation, execTool } from "./exec.ts";
import { fileTools } from "./fs.ts";
import type { Tool } from "./index.ts";
import { webFetchTool } from "./web.ts";

/** The node's workspace: agents.defaults.workspace, or ~/.picoclaw/workspace/<node id>. */
export function workspacePath(cfg: Config, nodeId: string, home?: string): string {
  const configured = cfg.agents.defaults.workspace.trim();
  return configured ? expandHome(configured, home) : join(expandHome("~", home), ".picoclaw", "workspace", nodeId);
}

/** Throws (stopping start-up) when isolation is on but bubblewrap cannot be used, or a custom deny pattern is invalid. */
export function builtinTools(cfg: Config, nodeId: string, home?: string): { tools: Tool[]; sandbox: Sandbox } {
  const t = cfg.tools;
  // Checked even without exec: stdio MCP servers run inside bubblewrap too.
  if (t.isolation.enabled) assertIsolation();
  const sandbox = createSandbox({
    workspace: workspacePath(cfg, nodeId, home),
    restrict: cfg.agents.defaults.restrict_to_workspace,
    readPaths: t.allow_read_paths.map((p) => expandHome(p, home)),
    writePaths: t.allow_write_paths.map((p) => expandHome(p, home)),
  });
  const tools: Tool[] = [];
  if (t.files.enabled) tools.push(...fileTools(sandbox));
  if (t.exec.enabled) {
    tools.push(
      execTool({
        sandbox,
        timeoutMs: t.exec.timeout_seconds * 1000,
        denyPatterns: t.exec.enable_deny_patterns,
        customDenyPatterns: t.exec.custom_deny_patterns,
        isolation: t.isolation.enabled,
        maxOutputBytes: t.max_output_bytes,
      }),
    );
  }
  if (t.web.fetch.enabled) {
    const f = t.web.fetch;
    tools.push(webFetchTool({ allowHosts: f.allow_hosts, maxBytes: f.max_bytes, timeoutMs: f.timeout_seconds * 1000 }));
  }
  return { tools, sandbox };
}
