// PicoClaw's `exec` tool: `sh -c command` in the workspace, its own process group (a timeout or a stop
// kills everything it started), an environment without the node's secrets, PicoClaw's deny patterns,
// and optionally bubblewrap (workspace writable, the rest read-only or absent, no network).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isWithin, type Sandbox } from "../sandbox.ts";
import { stringArg, type Tool, ToolError, type ToolResult } from "./index.ts";

export interface ExecOptions {
  sandbox: Sandbox;
  /** tools.exec.timeout_seconds in ms; default 60 s. */
  timeoutMs?: number;
  /** tools.exec.enable_deny_patterns; default on. */
  denyPatterns?: boolean;
  /** tools.exec.custom_deny_patterns: regular expressions, matched against the lower-cased command. */
  customDenyPatterns?: string[];
  /** tools.isolation.enabled: run inside bubblewrap. */
  isolation?: boolean;
  /** Output kept (stdout and stderr together); the rest is counted and the cut said. */
  maxOutputBytes: number;
}

/** PicoClaw's default deny patterns (pkg/tools/shell.go), matched against the lower-cased command. */
export const DEFAULT_DENY_PATTERNS: readonly RegExp[] = [
  /\brm\s+-[rf]{1,2}\b/,
  /\bdel\s+\/[fq]\b/,
  /\brmdir\s+\/s\b/,
  /\b(format|mkfs|diskpart)\b\s/,
  /\bdd\s+if=/,
  />\s*\/dev\/sd[a-z]\b/,
  /\b(shutdown|reboot|poweroff)\b/,
  /:\(\)\s*\{.*\};\s*:/,
  /\$\([^)]+\)/,
  /\$\{[^}]+\}/,
  /`[^`]+`/,
  /\|\s*sh\b/,
  /\|\s*bash\b/,
  /;\s*rm\s+-[rf]/,
  /&&\s*rm\s+-[rf]/,
  /\|\|\s*rm\s+-[rf]/,
  />\s*\/dev\/null\s*>&?\s*\d?/,
  /<<\s*EOF/,
  /\$\(\s*cat\s+/,
  /\$\(\s*curl\s+/,
  /\$\(\s*wget\s+/,
  /\$\(\s*which\s+/,
  /\bsudo\b/,
  /\bchmod\s+[0-7]{3,4}\b/,
  /\bchown\b/,
  /\bpkill\b/,
  /\bkillall\b/,
  /\bkill\s+-[9]\b/,
  /\bcurl\b.*\|\s*(sh|bash)/,
  /\bwget\b.*\|\s*(sh|bash)/,
  /\bnpm\s+install\s+-g\b/,
  /\bpip\s+install\s+--user\b/,
  /\bapt\s+(install|remove|purge)\b/,
  /\byum\s+(install|remove)\b/,
  /\bdnf\s+(install|remove)\b/,
  /\bdocker\s+run\b/,
  /\bdocker\s+exec\b/,
  /\bgit\s+push\b/,
  /\bgit\s+force\b/,
  /\bssh\b.*@/,
  /\beval\b/,
  /\bsource\s+.*\.sh\b/,
];

const DEFAULT_TIMEOUT_MS = 60_000;
/** After the group is killed, output still in flight gets this long before the pipes are dropped. */
const DRAIN_MS = 1_000;

/**
 * The whole environment a tool's child gets: built from nothing, so no PICOCLAW_*, NATS_*, OPENAI_*,
 * key, token or password of the node reaches a command the model wrote.
 */
export function childEnv(home: string): Record<string, string> {
  return {
    PATH: process.env.PATH || "/usr/local/bin:/usr/bin:/bin",
    HOME: home,
    LANG: process.env.LANG || "C.UTF-8",
    TERM: "dumb",
  };
}

/** bwrap on the PATH as it is now (read each time, so a changed PATH is seen). */
const findBwrap = () => Bun.which("bwrap", { PATH: process.env.PATH ?? "" }) ?? undefined;

/**
 * `argv` wrapped in bubblewrap: no namespace shared with the host (no network), /usr and the libraries
 * read-only, a private /tmp, the allow-listed paths as the sandbox allows them, the workspace writable.
 */
export function bwrapCommand(
  workspace: string,
  cwd: string,
  argv: string[],
  allow: { readPaths?: readonly string[]; writePaths?: readonly string[] } = {},
): string[] {
  const system = ["/bin", "/lib", "/lib64", "/etc/alternatives"].flatMap((p) => ["--ro-bind-try", p, p]);
  const reads = (allow.readPaths ?? []).flatMap((p) => ["--ro-bind-try", p, p]);
  const writes = (allow.writePaths ?? []).flatMap((p) => ["--bind-try", p, p]);
  return [
    findBwrap() ?? "bwrap",
    ...["--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr", ...system],
    ...["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", ...reads, ...writes],
    ...["--bind", workspace, workspace, "--chdir", cwd, "--", ...argv],
  ];
}

let probed: { ok: boolean; why: string } | undefined;

/** bwrap is installed and can build a sandbox here (user namespaces allowed); tried once. */
export function isolationAvailable(): boolean {
  return probeIsolation().ok;
}

/** For start-up with tools.isolation.enabled: throws saying why bubblewrap cannot be used. */
export function assertIsolation(): void {
  if (!findBwrap()) throw new Error("tools.isolation.enabled is true but bwrap (bubblewrap) is not installed: apt-get install bubblewrap");
  const p = probeIsolation();
  if (!p.ok) throw new Error(`tools.isolation.enabled is true but bwrap cannot build a sandbox here (user namespaces off?): ${p.why}`);
}

function probeIsolation(): { ok: boolean; why: string } {
  probed ??= tryBwrap();
  return probed;
}

function tryBwrap(): { ok: boolean; why: string } {
  if (!findBwrap()) return { ok: false, why: "not installed" };
  const dir = tmpdir();
  const [cmd, ...args] = bwrapCommand(dir, dir, ["true"]);
  const r = spawnSync(cmd!, args, { env: childEnv(dir), timeout: 10_000, encoding: "utf8" });
  return { ok: r.status === 0, why: r.error?.message ?? (r.stderr.trim() || `exit code ${r.status}`) };
}

/** The deny patterns in force; an invalid custom one stops start-up (a guard must not be silently off). */
function denyList(o: ExecOptions): RegExp[] {
  if (o.denyPatterns === false) return [];
  const custom = (o.customDenyPatterns ?? []).map((p) => {
    try {
      return new RegExp(p);
    } catch (err) {
      throw new Error(
        `tools.exec.custom_deny_patterns: ${JSON.stringify(p)} is not a valid regular expression (${(err as Error).message})`,
      );
    }
  });
  return [...DEFAULT_DENY_PATTERNS, ...custom];
}

export function execTool(o: ExecOptions): Tool {
  const deny = denyList(o);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (o.isolation) assertIsolation();
  const { sandbox } = o;
  return {
    name: "exec",
    description:
      "Run a shell command (sh -c) in the workspace and return its output (stdout and stderr together) and exit code. " +
      `It is killed after ${Math.round(timeoutMs / 1000)} s; destructive commands are refused.`,
    parameters: {
      type: "object",
      properties: {
        command: { type: "string", description: "The shell command to run" },
        working_dir: { type: "string", description: "Optional directory to run it in (relative to the workspace); default: the workspace" },
      },
      required: ["command"],
      additionalProperties: false,
    },
    replaySafe: false,
    async execute(args, ctx) {
      const command = stringArg(args, "command");
      const wd = stringArg(args, "working_dir", { optional: true });
      if (command.trim() === "") throw new ToolError(`argument "command" must not be empty`, "bad_arguments");
      const lower = command.toLowerCase();
      const hit = deny.find((re) => re.test(lower));
      if (hit) throw new ToolError(`command refused: matches deny pattern ${hit.source}`, "refused");
      const cwd = await sandbox.resolveRead(wd || ".");
      if (!(await stat(cwd).catch(() => undefined))?.isDirectory()) throw new ToolError(`working_dir "${wd}" is not a directory`);
      let argv = ["sh", "-c", command];
      if (o.isolation) {
        if (!isWithin(cwd, sandbox.workspace))
          throw new ToolError(`working_dir "${wd}": with isolation, commands run only inside the workspace`, "refused");
        argv = bwrapCommand(sandbox.workspace, cwd, argv, sandbox);
      }
      const r = await runGroup(argv, { cwd, env: childEnv(sandbox.workspace), timeoutMs, signal: ctx.signal, maxBytes: o.maxOutputBytes });
      return report(r, timeoutMs, ctx.signal);
    },
  };
}

function report(r: GroupRun, timeoutMs: number, signal: AbortSignal): ToolResult {
  const output = r.output === "" ? "(no output)" : r.output;
  if (r.ended === "timeout") {
    throw new ToolError(
      `command timed out after ${timeoutMs / 1000} s; it and every process it started were killed. Output so far:\n${output}`,
      "timeout",
    );
  }
  if (r.ended === "stopped") {
    const why = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? "aborted");
    throw new Error(`command stopped (${why}); output so far:\n${output}`);
  }
  const status = r.code !== null ? `exit code: ${r.code}` : `killed by signal ${r.signal}`;
  return { content: `${output.endsWith("\n") ? output : `${output}\n`}${status}`, isError: r.code !== 0 };
}

interface GroupRun {
  output: string;
  code: number | null;
  signal: string | null;
  ended: "exited" | "timeout" | "stopped";
}

interface RunOptions {
  cwd: string;
  env: Record<string, string>;
  timeoutMs: number;
  signal: AbortSignal;
  maxBytes: number;
}

/**
 * Runs argv as the leader of a new process group and waits for it. A timeout or an abort kills the
 * whole group; so does the leader's exit (background jobs do not outlive the call).
 */
async function runGroup(argv: string[], o: RunOptions): Promise<GroupRun> {
  const [cmd, ...args] = argv;
  const child = spawn(cmd!, args, { cwd: o.cwd, env: o.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const out = headOf(o.maxBytes);
  child.stdout?.on("data", out.add);
  child.stderr?.on("data", out.add);
  let ended: GroupRun["ended"] = "exited";
  const stop = (why: GroupRun["ended"]) => {
    if (ended === "exited") ended = why;
    killGroup(child);
  };
  const timer = setTimeout(() => stop("timeout"), o.timeoutMs);
  const onAbort = () => stop("stopped");
  o.signal.addEventListener("abort", onAbort, { once: true });
  if (o.signal.aborted) onAbort();
  const exit = await new Promise<{ code: number | null; signal: string | null }>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code, signal) => resolve({ code, signal }));
  }).finally(() => {
    // Decided at the leader's exit: a timer firing while the output drains changes nothing.
    clearTimeout(timer);
    o.signal.removeEventListener("abort", onAbort);
  });
  killGroup(child);
  await drained(child, closed);
  return { output: out.text(), ...exit, ended };
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // ESRCH: the group is already gone.
  }
}

/** Waits for the pipes to close, but not for a process that left the group and still holds them. */
async function drained(child: ChildProcess, closed: Promise<void>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, DRAIN_MS)))]);
  clearTimeout(timer);
  child.stdout?.destroy();
  child.stderr?.destroy();
}

/** Keeps the first `maxBytes` of a stream and counts the rest. */
function headOf(maxBytes: number) {
  const chunks: Buffer[] = [];
  let kept = 0;
  let total = 0;
  return {
    add(chunk: Buffer) {
      total += chunk.length;
      if (kept >= maxBytes) return;
      const part = chunk.subarray(0, maxBytes - kept);
      chunks.push(part);
      kept += part.length;
    },
    text(): string {
      const text = Buffer.concat(chunks)
        .toString("utf8")
        .replace(/\uFFFD$/, "");
      return total > kept ? `${text}\n[output cut: ${total - kept} more bytes of ${total} not shown]` : text;
    },
  };
}
