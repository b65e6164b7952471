// The one path guard of a node's tools: every file tool and exec's working directory go through it.
// Paths are judged by where they really lead (symlinks resolved), so a link inside the workspace that
// points outside is as refused as `../x`. restrict_to_workspace off: any path goes.
import { mkdirSync, realpathSync } from "node:fs";
import { lstat, readlink, realpath } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { ToolError } from "./tools/index.ts";

export interface SandboxOptions {
  /** Created (0700) when missing. */
  workspace: string;
  /** PicoClaw's restrict_to_workspace. */
  restrict: boolean;
  /** tools.allow_read_paths: reads may reach these too. */
  readPaths?: string[];
  /** tools.allow_write_paths: writes (and reads) may reach these too. */
  writePaths?: string[];
}

export interface Sandbox {
  /** The workspace's real path (symlinks resolved). */
  readonly workspace: string;
  readonly restrict: boolean;
  /** The allow lists, absolute (for isolation's bind mounts). */
  readonly readPaths: readonly string[];
  readonly writePaths: readonly string[];
  /** The real path to read, or a refused ToolError naming `path`. */
  resolveRead(path: string): Promise<string>;
  /** The real path to write (it may not exist yet), or a refused ToolError naming `path`. */
  resolveWrite(path: string): Promise<string>;
}

/** Symlink hops followed before a path counts as a loop (Linux's own limit). */
const MAX_LINK_HOPS = 40;

export function createSandbox(o: SandboxOptions): Sandbox {
  mkdirSync(o.workspace, { recursive: true, mode: 0o700 });
  const workspace = realpathSync(o.workspace);
  const absolute = (paths: string[] = []) => paths.map((p) => resolve(workspace, p));
  const readPaths = absolute(o.readPaths);
  const writePaths = absolute(o.writePaths);
  // Allow-listed paths are resolved once, on first use: they may be links themselves.
  let roots: Promise<{ read: string[]; write: string[] }> | undefined;
  const allowRoots = () => {
    roots ??= (async () => {
      const write = await Promise.all(writePaths.map((p) => realOrPlanned(p)));
      const read = await Promise.all(readPaths.map((p) => realOrPlanned(p)));
      return { read: [workspace, ...read, ...write], write: [workspace, ...write] };
    })();
    return roots;
  };

  const check = async (path: string, mode: "read" | "write"): Promise<string> => {
    if (path.includes("\0")) throw new ToolError(`path "${path}" contains a NUL character`, "bad_arguments");
    const wanted = resolve(workspace, path === "" ? "." : path);
    if (!o.restrict) return wanted;
    const real = await realOrPlanned(wanted);
    const allowed = (await allowRoots())[mode];
    if (allowed.some((root) => isWithin(real, root))) return real;
    const list = mode === "read" ? "tools.allow_read_paths" : "tools.allow_write_paths";
    const via = real === wanted ? "" : ` (it leads to ${real})`;
    throw new ToolError(`"${path}" is outside the workspace ${workspace}${via}; ${mode}s are allowed only there and in ${list}`, "refused");
  };

  return {
    workspace,
    restrict: o.restrict,
    readPaths,
    writePaths,
    resolveRead: (path) => check(path, "read"),
    resolveWrite: (path) => check(path, "write"),
  };
}

/** `path` is `root` or lies below it (both absolute, normalized). */
export function isWithin(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/**
 * Where `path` really leads: realpath for what exists; for what does not (a file to be created), the
 * real path of its deepest existing parent plus the rest. A dangling symlink is followed by hand, since
 * writing through it would create its target.
 */
async function realOrPlanned(path: string, hops = 0): Promise<string> {
  try {
    return await realpath(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ENOTDIR") throw err;
  }
  const parent = dirname(path);
  if (parent === path) return path;
  const realParent = await realOrPlanned(parent, hops);
  const leaf = join(realParent, basename(path));
  const st = await lstat(leaf).catch(() => undefined);
  if (!st?.isSymbolicLink()) return leaf;
  if (hops >= MAX_LINK_HOPS) throw new ToolError(`"${path}": too many levels of symbolic links`, "error");
  return realOrPlanned(resolve(realParent, await readlink(leaf)), hops + 1);
}
