// `submit` and `watch` on a terminal: the live rows (one per sub-task, redrawn in place on stderr) are
// drawn for the last time before the answer is printed, so the answer is never drawn over; `watch` of
// a request already answered shows its sub-tasks completed, not still queued. Run under a real
// pseudo-terminal (util-linux `script`), its output replayed as a terminal would show it.
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ROOT, reaper, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { planFile } from "./helpers/swarm.ts";

const suite = swarmSuite();
const procs = reaper();
afterEach(() => procs.killAll());

const ESC = String.fromCharCode(27);

/** The screen a terminal shows after `out`: text, newlines, CR, cursor up (ESC[nA) and erase line (ESC[2K). */
function screen(out: string): string[] {
  const rows: string[] = [""];
  let row = 0;
  let col = 0;
  for (let i = 0; i < out.length; i++) {
    const esc = out[i] === ESC ? /^\[(\d*)([A-Za-z])/.exec(out.slice(i + 1, i + 12)) : null;
    if (esc) {
      if (esc[2] === "A") row = Math.max(0, row - Number(esc[1] || 1));
      if (esc[2] === "K") rows[row] = "";
      i += esc[0].length;
      continue;
    }
    const ch = out[i]!;
    if (ch === "\n") {
      row++;
      col = 0;
      while (rows.length <= row) rows.push("");
    } else if (ch === "\r") col = 0;
    else {
      const line = rows[row]!.padEnd(col);
      rows[row] = line.slice(0, col) + ch + line.slice(col + 1);
      col++;
    }
  }
  return rows.map((r) => r.trimEnd());
}

/** Runs picoclaw under a pseudo-terminal; resolves with what the terminal received and the exit code. */
async function onTerminal(args: string[]): Promise<{ code: number; out: string }> {
  const quoted = ["bun", join(ROOT, "roles", "picoclaw.ts"), ...args].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const proc = Bun.spawn(["script", "-q", "-e", "-c", quoted, "/dev/null"], {
    env: { ...process.env, HOME: tempHome(), NO_COLOR: "1", TERM: "xterm" },
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
  });
  const killer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
  const out = await new Response(proc.stdout).text();
  const code = await proc.exited;
  clearTimeout(killer);
  return { code, out: out.replaceAll("\r\n", "\n") };
}

describe("progress on a terminal", () => {
  test("submit: the rows end completed and the whole answer stays on screen; watch of the answered request shows them completed", async () => {
    const swarm = await suite.start("tty1", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", env: ECHO_ENV },
    ]);
    const plan = planFile(
      "tasks:\n  - { id: a, capability: general, prompt: tty-part-a }\n  - { id: b, capability: general, prompt: tty-part-b }\n",
    );
    const r = await onTerminal(["submit", ...swarm.common, "--plan", plan]);
    expect(r.code).toBe(0);
    const shown = screen(r.out);
    const request = /request (r-[0-9a-z]+): 2 sub-task/.exec(shown.join("\n"))?.[1];
    expect(request).toBeDefined();
    // The answer's last lines are still there, below the rows, not drawn over.
    const text = shown.join("\n");
    expect(text).toMatch(/## b \(general\) — completed\n.*\n\n\[echo\] tty-part-b\n*$/);
    expect(shown.filter((l) => /^ {2}a \(general\)\s+claw-\S+\s+completed/.test(l))).toHaveLength(1);
    const rowAt = shown.findIndex((l) => /^ {2}b \(general\)\s+claw-\S+\s+completed/.test(l));
    const answerAt = shown.findIndex((l) => l.includes("tty-part-a"));
    expect(rowAt).toBeGreaterThanOrEqual(0);
    expect(answerAt).toBeGreaterThan(rowAt);

    const w = await onTerminal(["watch", request!, ...swarm.common]);
    expect(w.code).toBe(0);
    const watched = screen(w.out);
    expect(watched.filter((l) => /^ {2}[ab] \(general\)\s+claw-\S+\s+completed/.test(l))).toHaveLength(2);
    expect(watched.join("\n")).not.toMatch(/^ {2}[ab] \(general\)\s+\S+\s+queued/m);
    expect(watched.join("\n")).toMatch(/\[echo\] tty-part-b\n*$/);
  }, 90_000);
});
