// Small shared pieces of the benchmark: statistics, formatting, env knobs, helper processes.

import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

export const BENCH_DIR = resolve(import.meta.dir, "..");
export const ROOT = resolve(BENCH_DIR, "..");

/** A positive integer from BENCH_<name>, else `def`. */
export function envInt(name: string, def: number): number {
  const raw = process.env[`BENCH_${name}`];
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`BENCH_${name} must be a positive number, got ${raw}`);
  return Math.round(n);
}

export function envList(name: string, def: number[]): number[] {
  const raw = process.env[`BENCH_${name}`];
  if (!raw) return def;
  return raw.split(",").map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n <= 0) throw new Error(`BENCH_${name} must be a comma-separated list of positive integers, got ${raw}`);
    return n;
  });
}

export interface Stat {
  median: number;
  min: number;
  max: number;
}

export function stat(xs: number[]): Stat {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return { median: NaN, min: NaN, max: NaN };
  const mid = s.length / 2;
  const median = s.length % 2 ? s[Math.floor(mid)]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s.at(-1)! };
}

/** Nearest-rank percentile. */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** "3.52 [2.82–3.73]" with a unit after each number. */
export function fmt(s: Stat, unit = "", digits = 2): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");
  return `${f(s.median)}${unit} [${f(s.min)}–${f(s.max)}]`;
}

/** Runs `fn(i)` for i in [0, n) with at most `width` calls in flight. */
export async function pool(n: number, width: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, width) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

export function progress(text: string): void {
  process.stderr.write(text);
}

export async function until(what: string, check: () => boolean, timeoutMs: number, stepMs = 5): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await Bun.sleep(stepMs);
  }
}

/** A child process whose output lines are kept with the time (performance.now) each one arrived. */
export interface Child {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  pid: number;
  /** performance.now() just before the spawn. */
  spawnedAt: number;
  lines: { at: number; text: string }[];
  /** Resolves with the arrival time of the first line matching `re`. */
  waitLine(re: RegExp, timeoutMs?: number): Promise<number>;
  output(): string;
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
}

export interface ChildOptions {
  env?: Record<string, string>;
  cwd?: string;
}

export function spawnChild(cmd: string[], o: ChildOptions = {}): Child {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("PICOCLAW_")) env[k] = v;
  Object.assign(env, { NO_COLOR: "1" }, o.env);
  const spawnedAt = performance.now();
  const proc = Bun.spawn(cmd, { cwd: o.cwd ?? ROOT, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" }) as Subprocess<
    "ignore",
    "pipe",
    "pipe"
  >;
  const lines: { at: number; text: string }[] = [];
  const waiters: { re: RegExp; resolve: (at: number) => void }[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      const at = performance.now();
      buf += decoder.decode(chunk, { stream: true });
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push({ at, text });
        for (let i = waiters.length - 1; i >= 0; i--) {
          if (waiters[i]!.re.test(text)) {
            waiters[i]!.resolve(at);
            waiters.splice(i, 1);
          }
        }
      }
    }
  };
  const pumped = Promise.all([pump(proc.stdout), pump(proc.stderr)]).catch(() => {});
  const output = () => lines.map((l) => l.text).join("\n");
  return {
    proc,
    pid: proc.pid,
    spawnedAt,
    lines,
    output,
    waitLine(re, timeoutMs = 20_000) {
      const seen = lines.find((l) => re.test(l.text));
      if (seen) return Promise.resolve(seen.at);
      return new Promise<number>((res, rej) => {
        const timer = setTimeout(
          () => rej(new Error(`${cmd.join(" ")}: no line matching ${re} within ${timeoutMs}ms\n--- output ---\n${output()}`)),
          timeoutMs,
        );
        const died = proc.exited.then((code) => {
          clearTimeout(timer);
          rej(new Error(`${cmd.join(" ")} exited (${code}) before printing a line matching ${re}\n--- output ---\n${output()}`));
        });
        void died;
        waiters.push({
          re,
          resolve: (at) => {
            clearTimeout(timer);
            res(at);
          },
        });
      });
    },
    async stop(signal = "SIGTERM", timeoutMs = 15_000) {
      if (proc.exitCode !== null) return;
      proc.kill(signal);
      const done = await Promise.race([proc.exited.then(() => true), Bun.sleep(timeoutMs).then(() => false)]);
      if (!done) {
        proc.kill("SIGKILL");
        await proc.exited;
      }
      await Promise.race([pumped, Bun.sleep(1_000)]);
    },
  };
}

/** A bench helper script (bench/helpers/<name>.ts) run by bun; resolves once it prints "ready". */
export async function startHelper(name: string, args: string[], o: ChildOptions & { readyTimeoutMs?: number } = {}): Promise<Child> {
  const c = spawnChild(["bun", join(BENCH_DIR, "helpers", `${name}.ts`), ...args], o);
  await c.waitLine(/^ready\b/, o.readyTimeoutMs ?? 30_000);
  return c;
}

/**
 * Memory of a process in MiB from /proc/<pid>/smaps_rollup: Rss, private (Private_Clean +
 * Private_Dirty), Pss (shared pages split between their users) and anonymous (heap, stacks: not the
 * executable's file-backed pages).
 */
export async function memoryOf(pid: number): Promise<{ rss: number; priv: number; pss: number; anon: number }> {
  const text = await Bun.file(`/proc/${pid}/smaps_rollup`).text();
  const kb = (key: string) => Number(text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))?.[1] ?? NaN);
  return {
    rss: kb("Rss") / 1024,
    priv: (kb("Private_Clean") + kb("Private_Dirty")) / 1024,
    pss: kb("Pss") / 1024,
    anon: kb("Anonymous") / 1024,
  };
}

const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat. */
export async function cpuMs(pid: number): Promise<number> {
  try {
    const stat = await Bun.file(`/proc/${pid}/stat`).text();
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After "pid (comm) ", field 3 (state) is index 0: utime is field 14, stime field 15.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU ms used by groups of processes between `start()` and the returned function's call. */
export async function cpuMeter(groups: Record<string, number[]>): Promise<() => Promise<Record<string, number>>> {
  const read = async () =>
    Object.fromEntries(
      await Promise.all(
        Object.entries(groups).map(async ([k, pids]) => [k, (await Promise.all(pids.map(cpuMs))).reduce((a, b) => a + b, 0)] as const),
      ),
    );
  const before = await read();
  return async () => {
    const after = await read();
    return Object.fromEntries(Object.keys(groups).map((k) => [k, after[k]! - before[k]!]));
  };
}

/** CPU ms per item of work, per group, plus the total. */
export function perItem(cpu: Record<string, number>, n: number): Record<string, number> {
  const out = Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, v / n]));
  out.total = Object.values(cpu).reduce((a, b) => a + b, 0) / n;
  return out;
}

/** `bun run build` (dist/), once per bench run; BENCH_SKIP_BUILD=1 uses what is there. */
let built = false;
export function build(): void {
  if (built || process.env.BENCH_SKIP_BUILD === "1") return;
  const p = Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`bun run build failed:\n${p.stderr.toString()}${p.stdout.toString()}`);
  built = true;
}
