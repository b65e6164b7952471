// Every request ends (DESIGN §13): a deadline, a sub-task nobody can run, deliveries used up while no
// coordinator listened, a request that keeps failing (a dead letter), requests stuck on slow work that
// must not hold the coordinator, and payloads past the server's 1 MiB limit.
import { describe, expect, test } from "bun:test";
import { connect } from "nats";
import { swarmNames, taskKeys } from "../lib/subjects.ts";
import type { RequestEvent } from "../lib/task-messages.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { planFile, startSwarm, submit } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const procs = reaper();

describe("every request ends", () => {
  test("a deadline: submit --timeout 3s on a sub-task that takes a minute is answered as failed in time, naming what was unfinished", async () => {
    const swarm = await suite.start("live1", [{ script: "coordinator.ts" }, { script: "worker.ts", env: suite.llmEnv() }]);
    const started = Date.now();
    const r = await submit(swarm, ["--timeout", "3s", "think hard [[delay=60000]]"]);
    expect(r.code).toBe(1);
    expect(r.answer?.status).toBe("failed");
    expect(r.answer?.error).toContain("deadline passed with sub-tasks unfinished: general");
    expect(Date.now() - started).toBeLessThan(15_000);
    // The worker's call was cut at the deadline too: its slot is free again.
    await swarm.nodes[1]!.waitForLine(/Task attempt failed, will retry .*timed out|Task failed .*timed out/, 10_000);
  });

  test("the coordinator's swarm.tasks.request_timeout is every request's deadline", async () => {
    const swarm = await suite.start("live2", [
      { script: "coordinator.ts", args: ["--swarm.tasks.request_timeout", "2s"] },
      { script: "worker.ts", env: suite.llmEnv() },
    ]);
    const r = await submit(swarm, ["slow [[delay=60000]]"], 30_000);
    expect(r.code).toBe(1);
    expect(r.answer?.error).toContain("deadline passed");
  });

  test("a sub-task whose capability no online node offers any more fails after node_timeout, naming the capability", async () => {
    const swarm = await suite.start("live3", [
      { script: "coordinator.ts" },
      { script: "specialist.ts", args: ["--swarm.capabilities", "rust", "--swarm.max_concurrent", "1"], env: suite.llmEnv() },
    ]);
    // The specialist's only slot is busy for a long while; the second rust request waits in the queue.
    const first = procs.track(
      spawnRole("picoclaw.ts", ["submit", "--json", ...swarm.common, "--capabilities", "rust", "hold [[delay=60000]]"]),
    );
    await swarm.nodes[1]!.waitForLine(/Task assigned/);
    const second = procs.track(
      spawnRole("picoclaw.ts", ["submit", "--json", ...swarm.common, "--capabilities", "rust", "queued behind it"]),
    );
    await second.waitForLine(/"kind":"planned"/);
    swarm.nodes[1]!.signal("SIGKILL");
    const killedAt = Date.now();
    expect(await second.exited(30_000)).toBe(1);
    const answer = second.stdout.map((l) => JSON.parse(l) as RequestEvent).find((e) => e.kind === "answer");
    expect(answer?.answer).toContain("no online node offers rust");
    // node_timeout (1.5 s) to notice the node is gone, node_timeout more with no node, one reconcile pass.
    expect(Date.now() - killedAt).toBeLessThan(12_000);
    expect(await first.exited(30_000)).toBe(1);
    await procs.killAll();
  });

  test("with max_concurrent requests stuck on slow sub-tasks, a new request is still answered", async () => {
    const swarm = await suite.start("live4", [
      { script: "coordinator.ts", args: ["--swarm.max_concurrent", "2"] },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "5"], env: suite.llmEnv() },
    ]);
    const stuck = [1, 2].map((i) =>
      procs.track(spawnRole("picoclaw.ts", ["submit", "--json", ...swarm.common, `stuck ${i} [[delay=60000]]`])),
    );
    for (const s of stuck) await s.waitForLine(/"kind":"started"/, 15_000);
    const quick = await submit(swarm, ["quick one [[reply=done quickly]]"], 20_000);
    expect(quick.code).toBe(0);
    expect(quick.answer?.answer).toContain("done quickly");
    await procs.killAll();
  });
});

describe("stored state, not only advisories", () => {
  test("a forged event claiming the last attempt, dated a minute ago, does not make the coordinator give the sub-task up", async () => {
    const swarm = await suite.start("live9", [
      { script: "coordinator.ts", args: ["--swarm.tasks.max_deliver", "2", "--swarm.tasks.ack_wait", "2s"], env: ECHO_ENV },
      { script: "worker.ts", args: ["--swarm.tasks.max_deliver", "2", "--swarm.tasks.ack_wait", "2s"], env: suite.llmEnv() },
    ]);
    const submitted = submit(swarm, ["[[delay=9000]] forged-age"], 60_000);
    const request = (await swarm.nodes[0]!.waitForLine(/Task assigned .*request=(r-\S+)/, 20_000)).match(/request=(r-\S+)/)![1]!;
    const nc = await connect({ servers: suite.nats.url });
    try {
      const forged = {
        v: 1,
        request,
        task: "general",
        kind: "progress",
        node: swarm.ids[1]!,
        capability: "general",
        at: Date.now() - 60_000,
        attempt: 2,
      };
      // Where progress flows (live) and where the stream would store it (the reconcile reads that).
      const subjects = [swarmNames("live9").taskLive(request, "general"), swarmNames("live9").taskEvents(request, "general")];
      // Sent over and over for 5 s, so the forgery is the last event the reconcile pass has heard.
      for (let i = 0; i < 50; i++) {
        for (const subject of subjects) nc.publish(subject, new TextEncoder().encode(JSON.stringify(forged)));
        await Bun.sleep(100);
      }
      await nc.flush();
    } finally {
      await nc.close();
    }
    const r = await submitted;
    expect(r.code).toBe(0);
    expect(r.answer!.answer!).toContain("forged-age");
    expect(swarm.nodes[0]!.output()).not.toContain("gave up after 2 attempts");
  });

  test("deliveries used up while no coordinator listened: the next leader fails the sub-task from the stored events", async () => {
    const hid = "live5";
    const args = [
      ...["--swarm.hid", hid, "--swarm.nats.urls", suite.nats.url, ...FAST, "--swarm.lease_ttl", "2s"],
      ...["--swarm.tasks.max_deliver", "2", "--swarm.tasks.ack_wait", "1s"],
    ];
    const home = tempHome();
    // The test hears JetStream's max-deliveries advisory itself, to start the next leader only after it.
    const nc = await connect({ servers: suite.nats.url });
    let advised = false;
    nc.subscribe(swarmNames(hid).maxDeliveriesAdvisory, {
      callback: () => {
        advised = true;
      },
    });
    const coord = procs.track(spawnRole("coordinator.ts", args, { home, env: ECHO_ENV }));
    const worker = () => procs.track(spawnRole("worker.ts", args, { home, env: suite.llmEnv() }));
    let w = worker();
    for (const p of [coord, w]) await p.waitForLine(/Node joined swarm .*self=true/);
    const sub = procs.track(spawnRole("picoclaw.ts", ["submit", "--json", ...args, "crash-me [[delay=5000]]"], { home }));
    // First attempt: the node dies mid-call. Then the coordinator goes too, before the last attempt.
    await w.waitForLine(/Task assigned .*attempt=1/);
    w.signal("SIGKILL");
    coord.signal("SIGKILL");
    w = worker();
    await w.waitForLine(/Task assigned .*attempt=2/, 20_000);
    w.signal("SIGKILL"); // the last delivery dies too: JetStream's advisory goes to nobody
    // A healthy worker is online again (so the capability is offered), but JetStream will not deliver again.
    await worker().waitForLine(/Node joined swarm .*self=true/);
    await waitFor("JetStream's max-deliveries advisory, heard by no coordinator", () => advised, 20_000);
    await nc.close();
    const next = procs.track(spawnRole("coordinator.ts", args, { home, env: ECHO_ENV }));
    await next.waitForLine(/Task failed .*gave up after 2 attempts/, 30_000);
    expect(await sub.exited(30_000)).toBe(1);
    expect(sub.output()).toContain("gave up after 2 attempts");
    await procs.killAll();
  }, 120_000);

  test("resume pays nothing twice: sub-tasks still queued are not published again by the new leader", async () => {
    const swarm = await suite.start("live6", [
      { script: "coordinator.ts", args: ["--swarm.lease_ttl", "2s"] },
      { script: "coordinator.ts", args: ["--swarm.lease_ttl", "2s"] },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "1"], env: suite.llmEnv() },
    ]);
    // Count every message published on the swarm's task queues (a JetStream publish reaches plain subscribers too).
    const nc = await connect({ servers: suite.nats.url });
    const published = new Map<string, number>();
    nc.subscribe(swarmNames("live6").taskQueueAnyPriority("general"), {
      callback: (_e, m) => {
        const t = (JSON.parse(new TextDecoder().decode(m.data)) as { task: string }).task;
        published.set(t, (published.get(t) ?? 0) + 1);
      },
    });
    try {
      const plan = planFile(
        `tasks:\n${[1, 2, 3].map((i) => `  - { id: t${i}, capability: general, prompt: 'part ${i} [[delay=1500]]' }`).join("\n")}\n`,
      );
      const sub = procs.track(spawnRole("picoclaw.ts", ["submit", "--json", ...swarm.common, "--plan", plan]));
      // Once one has completed, the leader has long since recorded where all three were queued (a
      // leader killed between its publishes and that record would queue them again, deduplicated by
      // message id: not what this test is about).
      await sub.waitForLine(/"kind":"completed"/, 15_000);
      const leader = swarm.nodes.slice(0, 2).find((p) => p.lines.some((l) => l.includes("Coordinator leading")))!;
      const standby = swarm.nodes.slice(0, 2).find((p) => p !== leader)!;
      leader.signal("SIGKILL");
      await standby.waitForLine(/Request resumed/, 15_000);
      expect(await sub.exited(30_000)).toBe(0);
      expect(Object.fromEntries(published)).toEqual({ t1: 1, t2: 1, t3: 1 });
    } finally {
      await nc.close();
      await procs.killAll();
    }
  });
});

describe("payloads past the server's limit", () => {
  test("a plan of 32 sub-tasks with 64 KiB results, and one that needs them all, is answered in full", async () => {
    const swarm = await suite.start("live7", [
      { script: "coordinator.ts", args: ["--swarm.tasks.max_fanout", "32"] },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "16"], env: suite.llmEnv() },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "16"], env: suite.llmEnv() },
    ]);
    const parts = Array.from({ length: 32 }, (_, i) => `  - { id: p${i}, capability: general, prompt: 'part ${i} [[size=65536]]' }`);
    const all = `  - { id: merge, capability: general, depends_on: [${parts.map((_, i) => `p${i}`).join(", ")}], prompt: 'merge them [[reply=merged]]' }`;
    const plan = planFile(`tasks:\n${parts.join("\n")}\n${all}\n`);
    const r = await runRole("picoclaw.ts", ["submit", ...swarm.common, "--plan", plan], { timeoutMs: 120_000 });
    expect(r.code).toBe(0);
    // The whole report reached stdout: 33 sections, 32 of them with their 64 KiB result.
    expect((r.stdout.match(/^## p\d+ \(general\) — completed$/gm) ?? []).length).toBe(32);
    expect((r.stdout.match(/x{65536}/g) ?? []).length).toBe(32);
    expect(r.stdout).toContain("## merge (general) — completed");
    expect(r.stdout.length).toBeGreaterThan(32 * 65536);
    // The merge sub-task was given its inputs by reference and read all 2 MiB of them.
    const mergeCall = suite.llm.requests.find((q) => q.body.messages?.some((m) => m.content.includes("merge them")));
    expect(mergeCall?.body.messages?.at(-1)?.content.length).toBeGreaterThan(32 * 65536);
  }, 120_000);
});

describe("a request that keeps failing", () => {
  let nats: NatsServer;
  test("is answered as failed after a bounded number of tries and listed by picoclaw requests --failed", async () => {
    // This deployment forgot the answers object store in its permissions: a large answer cannot be stored.
    nats = await startNatsServer({
      config: `authorization { users = [ { user: all, password: pw, permissions: { publish: { deny: ["$O.picoclaw_live8_answers.>", "$JS.API.STREAM.CREATE.OBJ_picoclaw_live8_answers"] } } } ] }`,
    });
    try {
      const auth = ["--swarm.nats.user", "all", "--swarm.nats.password", "pw"];
      const swarm = await startSwarm(nats, "live8", [
        { script: "coordinator.ts", args: [...auth, "--swarm.lease_ttl", "2s"] },
        { script: "worker.ts", args: auth, env: suite.llmEnv() },
      ]);
      swarm.common.push(...auth);
      // Five results of 64 KiB make a report past the 256 KiB that travels inline.
      const plan = planFile(
        `tasks:\n${[1, 2, 3, 4, 5].map((i) => `  - { id: big${i}, capability: general, prompt: 'big ${i} [[size=65536]]' }`).join("\n")}\n`,
      );
      const r = await submit(swarm, ["--plan", plan], 120_000);
      expect(r.code).toBe(1);
      expect(r.answer?.error).toMatch(/gave up after 3 failed attempts to handle it/);
      // A record under dead.* that is no dead letter is said, not listed and not hidden.
      const nc = await connect({ servers: nats.url, user: "all", pass: "pw" });
      const kv = await nc.jetstream().views.kv(swarmNames("live8").buckets.tasks);
      await kv.put(taskKeys.dead("junk"), "not a dead letter");
      await nc.close();
      const listed = await runRole("picoclaw.ts", ["requests", "--failed", ...swarm.common]);
      expect(listed.code).toBe(0);
      expect(listed.stdout).toContain(r.answer!.request);
      expect(listed.stdout).toContain("3 failures");
      expect(listed.stdout).not.toContain("junk");
      expect(listed.output).toMatch(/dead\.junk is not a readable dead letter \(.+\); not listed/);
      await swarm.stop();
    } finally {
      await nats.stop();
    }
  }, 120_000);
});
