// Role processes as a user runs them: spawned scripts (or compiled binaries), output read line by line.

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { waitFor } from "./wait.ts";

export const ROOT = resolve(import.meta.dir, "../..");

export interface RoleProcess {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Every line so far, stdout and stderr interleaved in arrival order. */
  lines: string[];
  /** Standard output alone (for --json). */
  stdout: string[];
  output(): string;
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  countLines(pattern: RegExp): number;
  signal(sig: NodeJS.Signals): void;
  /** Waits for exit (bounded) and returns the exit code. */
  exited(timeoutMs?: number): Promise<number>;
}

/** A fresh HOME so nothing reads or writes the developer's ~/.picoclaw. */
export function tempHome(): string {
  return mkdtempSync(join(tmpdir(), "picoclaw-home-"));
}

export interface SpawnOptions {
  env?: Record<string, string>;
  home?: string;
  /** Run this executable instead of `bun roles/<script>`. */
  binary?: string;
  cwd?: string;
  /** Text written to the process's standard input (closed afterwards). */
  stdin?: string;
  /** A command prefix, e.g. ["ip", "netns", "exec", "pc-ns1"] to run the process inside a network namespace. */
  wrap?: string[];
}

/** Test-speed timing: heartbeats every 200ms, offline after 1.5s. */
export const FAST = ["--swarm.nats.heartbeat_interval", "200ms", "--swarm.nats.node_timeout", "1500ms"];

export function spawnRole(script: string, args: string[], o: SpawnOptions = {}): RoleProcess {
  const cmd = [...(o.wrap ?? []), ...(o.binary ? [o.binary, ...args] : ["bun", join(ROOT, "roles", script), ...args])];
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith("PICOCLAW_")) env[k] = v;
  }
  Object.assign(env, { HOME: o.home ?? tempHome(), NO_COLOR: "1" }, o.env);
  const proc = Bun.spawn(cmd, {
    cwd: o.cwd ?? ROOT,
    env,
    stdin: o.stdin === undefined ? "ignore" : new Blob([o.stdin]),
    stdout: "pipe",
    stderr: "pipe",
  }) as Subprocess<"ignore", "pipe", "pipe">;
  const lines: string[] = [];
  const stdout: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>, own?: string[]) => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      buf += decoder.decode(chunk, { stream: true });
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        lines.push(buf.slice(0, nl));
        own?.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
    if (buf) {
      lines.push(buf);
      own?.push(buf);
    }
  };
  const pumped = Promise.all([pump(proc.stdout, stdout), pump(proc.stderr)]);
  return {
    proc,
    lines,
    stdout,
    output: () => lines.join("\n"),
    waitForLine: (pattern, timeoutMs = 10_000) =>
      waitFor(
        // The output when the wait ends, not when it began.
        () => `a line matching ${pattern} from ${script}\n--- output so far ---\n${lines.join("\n")}\n---`,
        () => lines.find((l) => pattern.test(l)),
        timeoutMs,
      ),
    countLines: (pattern) => lines.filter((l) => pattern.test(l)).length,
    signal: (sig) => proc.kill(sig),
    async exited(timeoutMs = 10_000) {
      const code = await Promise.race([proc.exited, Bun.sleep(timeoutMs).then(() => undefined)]);
      if (code === undefined) {
        proc.kill("SIGKILL");
        throw new Error(`${script} did not exit within ${timeoutMs}ms\n${lines.join("\n")}`);
      }
      await pumped;
      return code;
    },
  };
}

/** Runs an entry script to completion (bounded) and returns its exit code and output. */
export async function runRole(script: string, args: string[], o: SpawnOptions & { timeoutMs?: number } = {}) {
  const p = spawnRole(script, args, o);
  const code = await p.exited(o.timeoutMs ?? 20_000);
  return { code, stdout: p.stdout.join("\n"), output: p.output(), lines: p.lines };
}

/** Kills every process still running at the end of a test. */
export function reaper() {
  const procs: RoleProcess[] = [];
  return {
    track<T extends RoleProcess>(p: T): T {
      procs.push(p);
      return p;
    },
    async killAll() {
      for (const p of procs) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
      await Promise.all(procs.map((p) => p.proc.exited));
      procs.length = 0;
    },
  };
}
