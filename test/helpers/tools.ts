// External tools a suite needs (promtool, docker, temporal, chromium): found on PATH or in the tools
// directory setup installs into, or a failure naming the install command. Never a silent skip.
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** The user-level tools directory scripts/setup.sh installs into when not root. */
export const TOOLS_DIR = process.env.PICOCLAW_TOOLS_DIR ?? join(homedir(), ".picoclaw", "tools");

export function findTool(name: string): string | undefined {
  const onPath = Bun.which(name);
  if (onPath) return onPath;
  const local = join(TOOLS_DIR, "bin", name);
  return existsSync(local) ? local : undefined;
}

/** The tool's path, or an error saying how to install it (run `npm test`, whose setup installs it). */
export function requireTool(name: string, install: string): string {
  const path = findTool(name);
  if (!path) throw new Error(`${name} is not installed; 'npm test' installs it (scripts/setup.sh), or run: ${install}`);
  return path;
}
