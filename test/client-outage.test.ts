// Clients ride out NATS outages: `submit` waits for NATS within connect_timeout, stores its request
// through a restart, follows the answer from the EVENTS stream (so a reconnect loses nothing), never
// prints a stack for a network failure, and `watch` re-attaches to a request by id.
import { describe, expect, test } from "bun:test";
import { reaper, runRole, spawnRole } from "./helpers/role-process.ts";
import { swarmSuite } from "./helpers/suite.ts";

const suite = swarmSuite();
const procs = reaper();

describe("submit and watch through NATS outages", () => {
  test("started while NATS is down: submit waits for it (within connect_timeout) and prints the answer", async () => {
    const swarm = await suite.start("out1", [{ script: "coordinator.ts" }, { script: "worker.ts" }]);
    await suite.nats.down();
    try {
      const sub = procs.track(
        spawnRole("picoclaw.ts", ["submit", ...swarm.common, "--swarm.nats.connect_timeout", "30s", "say hi [[reply=hello back]]"]),
      );
      await sub.waitForLine(/NATS not reachable yet; waiting for it/, 20_000);
      await suite.nats.up();
      expect(await sub.exited(60_000)).toBe(0);
      expect(sub.stdout.join("\n")).toContain("hello back");
    } finally {
      await procs.killAll();
    }
  });

  test("NATS unreachable for longer than connect_timeout: exit 4 and one line naming the server, no stack", async () => {
    const r = await runRole("picoclaw.ts", [
      "submit",
      "--swarm.nats.urls",
      "nats://127.0.0.1:1",
      "--swarm.nats.connect_timeout",
      "1500ms",
      "hi",
    ]);
    expect(r.code).toBe(4);
    const errors = r.lines.filter((l) => l.startsWith("picoclaw:"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain("cannot connect to NATS at nats://127.0.0.1:1");
    expect(errors[0]).toContain("connection refused");
    expect(r.output).not.toMatch(/\n\s+at /); // no stack frames
  });

  test("watch: re-attaches to a request whose submitter was killed, and prints a stored answer at once", async () => {
    const swarm = await suite.start("out2", [{ script: "coordinator.ts" }, { script: "worker.ts", env: suite.llmEnv() }]);
    const sub = procs.track(
      spawnRole("picoclaw.ts", ["submit", "--json", ...swarm.common, "slow one [[delay=2500]] [[reply=worth the wait]]"]),
    );
    const planned = await sub.waitForLine(/"kind":"planned"/, 30_000);
    const request = (JSON.parse(planned) as { request: string }).request;
    sub.signal("SIGKILL");
    const watched = await runRole("picoclaw.ts", ["watch", request, ...swarm.common], { timeoutMs: 30_000 });
    expect(watched.code).toBe(0);
    expect(watched.stdout).toContain("worth the wait");
    // Answered now: a second watch prints the stored answer without waiting.
    const again = await runRole("picoclaw.ts", ["watch", request, ...swarm.common, "--timeout", "5s"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("worth the wait");
    // An id nobody submitted: said at once (exit 5), not waited for.
    const none = await runRole("picoclaw.ts", ["watch", "r-0000000000", ...swarm.common, "--timeout", "1s"]);
    expect(none.code).toBe(5);
    expect(none.output).toContain("has no request r-0000000000");
  });

  test("NATS restarted at random moments during 50 concurrent submits: every submit prints its answer", async () => {
    const swarm = await suite.start("out3", [
      { script: "coordinator.ts", env: suite.llmEnv() },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "25"], env: suite.llmEnv() },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "25"], env: suite.llmEnv() },
    ]);
    const SUBMITS = 50;
    const started = Date.now();
    const subs = Array.from({ length: SUBMITS }, (_, i) =>
      procs.track(
        spawnRole("picoclaw.ts", [
          "submit",
          ...swarm.common,
          "--swarm.nats.connect_timeout",
          "60s",
          `request ${i} [[delay=${500 + ((i * 37) % 1500)}]] [[reply=answer-${i}]]`,
        ]),
      ),
    );
    // Three outages at random moments while the submits start, store and wait: 0.3-1.5 s each.
    const random = (lo: number, hi: number) => lo + Math.random() * (hi - lo);
    const outages: string[] = [];
    for (let k = 0; k < 3; k++) {
      await Bun.sleep(random(500, 2_500)); // a random moment, not a wait for an event
      const at = Date.now() - started;
      await suite.nats.down({ hard: k === 1 });
      await Bun.sleep(random(300, 1_500)); // the outage's length
      await suite.nats.up();
      outages.push(`${k === 1 ? "SIGKILL" : "SIGTERM"} at ${at} ms, down ${Date.now() - started - at} ms`);
    }
    const codes = await Promise.all(subs.map((s) => s.exited(180_000)));
    const coordinator = swarm.nodes[0]!;
    console.log(
      `client fault run: ${SUBMITS} submits, NATS restarted 3 times (${outages.join("; ")}); ` +
        `${codes.filter((c) => c === 0).length} exited 0 with their answer, last one after ${Date.now() - started} ms; ` +
        `coordinator: ${coordinator.countLines(/Request answered/)} answered, ${coordinator.countLines(/Request handed back/)} handed back, ` +
        `${coordinator.countLines(/Request handling failed/)} handling failures, ${coordinator.countLines(/NATS did not answer; retrying/)} writes retried in place`,
    );
    const failed = subs
      .map((s, i) => ({ i, code: codes[i], out: s.output() }))
      .filter((r) => r.code !== 0 || !r.out.includes(`answer-${r.i}`));
    expect(failed.map((f) => `#${f.i} exit ${f.code}: ${f.out.split("\n").slice(-4).join(" | ")}`)).toEqual([]);
    for (const s of subs) expect(s.output()).not.toMatch(/\n\s+at /);
    expect(Date.now() - started).toBeLessThan(180_000);
  }, 240_000);
});
