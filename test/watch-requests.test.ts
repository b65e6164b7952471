// `picoclaw watch` of an id the swarm never stored says so at once (exit 5) instead of waiting its whole
// timeout, while a request still queued for a coordinator is waited for; `picoclaw requests` lists the
// requests kept, newest first, each with its status; `--failed` lists every one that ended failed:
// answered as failed, rejected, and dead letters (marked). Real nats-server and role processes.
import { afterEach, describe, expect, test } from "bun:test";
import { connect } from "nats";
import { swarmNames } from "../lib/subjects.ts";
import { writeDeadLetter } from "../lib/task-records.ts";
import { reaper, runRole, spawnRole } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { planFile, submit } from "./helpers/swarm.ts";

const suite = swarmSuite();
const procs = reaper();
afterEach(() => procs.killAll());

/** `2026-...Z  r-…  <status>  <detail>` lines of `picoclaw requests`, as [id, status, detail]. */
function rows(stdout: string): [string, string, string][] {
  return stdout
    .split("\n")
    .map((l) => /^\d{4}-\d\d-\d\dT[\d:.]+Z {2}(r-[0-9a-z]+) {2}(.+?) {2,}(.*)$/.exec(l))
    .filter((m) => m !== null)
    .map((m) => [m[1]!, m[2]!.trim(), m[3]!]);
}

describe("watch", () => {
  test("an id the swarm has never stored: said at once, exit 5; a stored one is still printed", async () => {
    const swarm = await suite.start("wr1", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", env: ECHO_ENV },
    ]);
    const started = Date.now();
    const r = await runRole("picoclaw.ts", ["watch", "r-nonexistent1", "--timeout", "5m", ...swarm.common]);
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 5, stdout: "" });
    expect(Date.now() - started).toBeLessThan(15_000); // not the 5 minutes asked for
    expect(r.output).toContain(
      "picoclaw: swarm wr1 has no request r-nonexistent1: it is not queued and no event of it is kept " +
        "(requests are kept for swarm.tasks.retention, 24h0m); check the id, and --swarm.hid if it was sent to another swarm",
    );
    expect(r.output).not.toContain("it may still be queued");

    const done = await submit(swarm, ["watch-known-marker"]);
    expect(done.code).toBe(0);
    const w = await runRole("picoclaw.ts", ["watch", done.answer!.request, ...swarm.common]);
    expect(w.code).toBe(0);
    expect(w.stdout).toContain(`# Swarm answer (request ${done.answer!.request})`);
  });

  test("a request still queued (no coordinator yet) is not unknown: watch waits for it, requests lists it as queued", async () => {
    const swarm = await suite.start("wr2", [{ script: "worker.ts", env: ECHO_ENV }]);
    const sub = procs.track(spawnRole("picoclaw.ts", ["submit", ...swarm.common, "queued-marker-31 please"]));
    const id = (await sub.waitForLine(/submitted request r-[0-9a-f]+/)).match(/r-[0-9a-f]+/)![0];
    const w = await runRole("picoclaw.ts", ["watch", id, "--timeout", "2s", ...swarm.common]);
    expect(w.code).toBe(3); // no answer in time, as before: it may still be answered
    expect(w.output).toContain(`no answer to request ${id} within 2s`);
    expect(w.output).not.toContain("has no request");
    const listed = await runRole("picoclaw.ts", ["requests", ...swarm.common]);
    expect(listed.code).toBe(0);
    expect(rows(listed.stdout)).toEqual([[id, "queued", 'waiting for a coordinator · "queued-marker-31 please"']]);
  });
});

describe("requests", () => {
  test("newest first with status; --failed: failed answers, rejections and dead letters (marked); --json", async () => {
    const swarm = await suite.start("wr3", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", env: suite.llmEnv() },
    ]);
    const none = await runRole("picoclaw.ts", ["requests", ...swarm.common]);
    expect({ code: none.code, out: none.stdout }).toEqual({ code: 0, out: "no requests kept in swarm wr3" });

    // Each sub-task takes 300 ms: a coordinator that answers within milliseconds of queueing can have its
    // "running" record write land after the answered one (roles/coordinator/request.ts), which this is not about.
    const ok = await submit(swarm, ["--capabilities", "general", "fine one [[delay=300]] [[reply=fine]]"]);
    expect(ok.code).toBe(0);
    const partialPlan = planFile(
      "tasks:\n  - { id: good, capability: general, prompt: 'good part [[delay=300]]' }\n" +
        "  - { id: bad, capability: general, prompt: 'bad part [[delay=300]] [[status=400]]', required: false }\n",
    );
    const partial = await submit(swarm, ["--plan", partialPlan]);
    expect(partial.answer?.status).toBe("partial");
    const failed = await submit(swarm, ["--capabilities", "general", "broken one [[delay=300]] [[status=400]]"]);
    expect({ code: failed.code, status: failed.answer?.status }).toEqual({ code: 1, status: "failed" });
    const rejected = await submit(swarm, ["--plan", planFile("tasks:\n  - { id: x, capability: nobody-offers-it, prompt: hi }\n")]);
    expect({ code: rejected.code, kind: rejected.answer?.kind }).toEqual({ code: 1, kind: "failed" });
    // A dead letter, as a coordinator writes one when handling a request keeps failing (test/liveness.test.ts
    // makes a real one; here its listing is what is tested).
    const nc = await connect({ servers: suite.nats.url });
    const kv = await nc.jetstream().views.kv(swarmNames("wr3").buckets.tasks);
    await writeDeadLetter(kv, {
      v: 1,
      request: "r-dead000001",
      text: "dead-marker request",
      error: "cannot store the answer",
      failures: 3,
      at: Date.now() + 1_000,
      coordinator: swarm.ids[0]!,
    });
    await nc.close();
    const [okId, partialId, failedId, rejectedId] = [ok, partial, failed, rejected].map((r) => r.answer!.request) as [
      string,
      string,
      string,
      string,
    ];

    const all = await runRole("picoclaw.ts", ["requests", ...swarm.common]);
    expect(all.code).toBe(0);
    const listed = rows(all.stdout);
    expect(listed.map(([id, status]) => [id, status])).toEqual([
      ["r-dead000001", "failed (dead letter)"],
      [rejectedId, "rejected"],
      [failedId, "failed"],
      [partialId, "partial"],
      [okId, "completed"],
    ]);
    expect(listed[0]![2]).toBe('3 failures, last error: cannot store the answer · "dead-marker request"');
    expect(listed[1]![2]).toMatch(/^error: .*nobody-offers-it/);
    expect(listed[2]![2]).toMatch(/^1 sub-task · error: /);
    expect(listed[4]![2]).toBe("1 sub-task");

    const failedOnly = await runRole("picoclaw.ts", ["requests", "--failed", ...swarm.common]);
    expect(failedOnly.code).toBe(0);
    expect(rows(failedOnly.stdout).map(([id, status]) => [id, status])).toEqual([
      ["r-dead000001", "failed (dead letter)"],
      [rejectedId, "rejected"],
      [failedId, "failed"],
    ]);

    const json = await runRole("picoclaw.ts", ["requests", "--failed", "--json", ...swarm.common]);
    const parsed = json.stdout.split("\n").map((l) => JSON.parse(l) as { request: string; status: string; dead_letter?: boolean });
    expect(parsed.map((p) => [p.request, p.status, p.dead_letter ?? false])).toEqual([
      ["r-dead000001", "failed", true],
      [rejectedId, "rejected", false],
      [failedId, "failed", false],
    ]);
  });
});
