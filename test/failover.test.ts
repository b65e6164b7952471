// Nothing is lost: dead workers, dead or paused coordinators, a NATS restart, drains and poison
// sub-tasks — each with real processes, signals, and a real nats-server with file storage.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "nats";
import { swarmNames } from "../lib/subjects.ts";
import { type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { FAST, type RoleProcess, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { planFile, type SwarmEvent, selfId } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

let nats: NatsServer;
let llm: LlmServer;
let procs: RoleProcess[] = [];
beforeAll(async () => {
  [nats, llm] = await Promise.all([startNatsServer(), startLlmServer()]);
});
afterEach(async () => {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.proc.exited));
  procs = [];
});
afterAll(async () => {
  await Promise.all([nats.stop(), llm.stop()]);
});

const LEASE = ["--swarm.lease_ttl", "2s"];
const ACK = ["--swarm.tasks.ack_wait", "2s"];

function common(hid: string): string[] {
  return ["--swarm.nats.urls", nats.url, "--swarm.hid", hid, ...FAST];
}
function start(script: string, hid: string, args: string[] = [], env: Record<string, string> = {}): RoleProcess {
  const p = spawnRole(script, [...common(hid), ...args], { env: { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m", ...env } });
  procs.push(p);
  return p;
}
const coordinator = (hid: string, args: string[] = []) =>
  start("coordinator.ts", hid, [...LEASE, ...args], { PICOCLAW_LLM_PROVIDER: "echo" });
const worker = (hid: string, args: string[] = []) => start("worker.ts", hid, [...ACK, ...args]);
async function joined(...ps: RoleProcess[]) {
  for (const p of ps) await p.waitForLine(/Node joined swarm .*self=true/, 15_000);
}
/** `picoclaw submit --json` in the background; `done` resolves with its events and exit code. */
function submitInBackground(hid: string, args: string[]) {
  const p = spawnRole("picoclaw.ts", ["submit", "--json", "--timeout", "90s", ...common(hid), ...args]);
  procs.push(p);
  const done = p.exited(100_000).then((code) => ({
    code,
    events: p.stdout
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as SwarmEvent & { task?: string; status?: string; answer?: string }),
  }));
  return { p, done };
}
/** LLM calls whose own prompt (not the inputs from earlier sub-tasks) contains `marker`. */
const calls = (marker: string) =>
  llm.requests.filter((q) => (q.body.messages?.at(-1)?.content ?? "").split("## Inputs from earlier sub-tasks")[0]!.includes(marker))
    .length;

/** How many answer events for `request` the EVENTS stream holds (what followers replay). */
async function storedAnswers(hid: string, request: string): Promise<number> {
  const nc = await connect({ servers: nats.url });
  try {
    const names = swarmNames(hid);
    const c = await nc.jetstream().consumers.get(names.streams.events, { filterSubjects: names.requestEvents(request) });
    let n = 0;
    const it = await c.fetch({ max_messages: 1000, expires: 1_500 });
    for await (const m of it) if ((JSON.parse(m.string()) as { kind: string }).kind === "answer") n++;
    return n;
  } finally {
    await nc.close();
  }
}
const requestOf = (events: { request?: string }[]) => events.find((e) => e.request)?.request ?? "";

describe("failover", () => {
  test("a worker killed mid-task: its sub-task runs again elsewhere, the request completes, one result reported", async () => {
    const hid = "fo1";
    const c = coordinator(hid);
    const w1 = worker(hid);
    const w2 = worker(hid, ["--swarm.max_concurrent", "1"]);
    await joined(c, w1, w2);
    const s = submitInBackground(hid, [
      "--plan",
      planFile("tasks:\n  - { id: long, capability: general, prompt: 'victim-17 [[delay=2500]]' }\n"),
    ]);
    const taker = await Promise.race([
      w1.waitForLine(/Task assigned task=long/, 20_000).then(() => w1),
      w2.waitForLine(/Task assigned task=long/, 20_000).then(() => w2),
    ]);
    const other = taker === w1 ? w2 : w1;
    const victimId = selfId(taker);
    // Kill it mid-call: once its LLM request has reached the server.
    await waitFor("the victim's LLM call to start", () => calls("victim-17") === 1, 10_000);
    taker.signal("SIGKILL");
    await c.waitForLine(new RegExp(`Node marked offline node=${victimId} role=worker`), 10_000);
    const r = await s.done;
    expect(r.code).toBe(0);
    await other.waitForLine(/Task completed task=long/);
    expect(r.events.filter((e) => e.kind === "completed" && e.task === "long").length).toBe(1);
    expect(calls("victim-17")).toBe(2); // executed twice (at-least-once), reported once
    expect(await storedAnswers(hid, requestOf(r.events))).toBe(1);
  });

  test("the leading coordinator killed mid-request: the standby takes the lease within its TTL and resumes", async () => {
    const hid = "fo2";
    const c1 = coordinator(hid);
    await c1.waitForLine(/Coordinator leading/, 15_000);
    const c2 = coordinator(hid);
    const w = worker(hid);
    await joined(c1, c2, w);
    const plan = planFile(
      [
        "tasks:",
        "  - { id: first, capability: general, prompt: 'first-step-31 [[delay=200]]' }",
        "  - { id: second, capability: general, depends_on: [first], prompt: 'second-step-31 [[delay=2500]]' }",
        "  - { id: side, capability: general, prompt: 'side-step-31 [[delay=2500]]' }",
        "",
      ].join("\n"),
    );
    const s = submitInBackground(hid, ["--plan", plan]);
    await w.waitForLine(/Task assigned task=second/, 20_000);
    const killedAt = Date.now();
    c1.signal("SIGKILL");
    const leading = await c2.waitForLine(/Coordinator leading/, 10_000);
    // Lease TTL, the standby's polling (a third of it) and slack for a loaded machine.
    expect(Date.parse(leading.slice(0, 24)) - killedAt).toBeLessThan(2_000 + 700 + 2_300);
    await c2.waitForLine(/Request resumed/, 10_000);
    const r = await s.done;
    expect(r.code).toBe(0);
    const answer = r.events.find((e) => e.kind === "answer");
    expect(answer?.status).toBe("completed");
    // Finished sub-tasks were not run again; queued and running ones completed once.
    expect(calls("first-step-31")).toBe(1);
    expect(calls("second-step-31")).toBe(1);
    expect(calls("side-step-31")).toBe(1);
    expect(await storedAnswers(hid, requestOf(r.events))).toBe(1);
  });

  test("with no coordinator, queued sub-tasks still finish; the request resumes when a coordinator starts", async () => {
    const hid = "fo3";
    const c1 = coordinator(hid);
    const w = worker(hid);
    await joined(c1, w);
    await c1.waitForLine(new RegExp(`Node joined swarm node=${selfId(w)}`));
    const plan = planFile(
      "tasks:\n  - { id: a, capability: general, prompt: 'orphan-a-44 [[delay=1500]]' }\n  - { id: b, capability: general, prompt: 'orphan-b-44 [[delay=1500]]' }\n",
    );
    const s = submitInBackground(hid, ["--plan", plan]);
    await w.waitForLine(/Task assigned task=b/, 20_000);
    c1.signal("SIGKILL");
    await waitFor("both sub-tasks finished with no coordinator", () => w.countLines(/Task completed task=[ab]\b/) === 2, 20_000);
    const c2 = coordinator(hid);
    await c2.waitForLine(/Request resumed/, 20_000);
    const r = await s.done;
    expect(r.code).toBe(0);
    expect(calls("orphan-a-44")).toBe(1);
    expect(calls("orphan-b-44")).toBe(1);
  });

  test("a paused leader is replaced, and on waking steps down without touching the request", async () => {
    const hid = "fo4";
    const c1 = coordinator(hid);
    await c1.waitForLine(/Coordinator leading/, 15_000);
    const c2 = coordinator(hid);
    const w = worker(hid);
    await joined(c1, c2, w);
    const s = submitInBackground(hid, [
      "--plan",
      planFile("tasks:\n  - { id: slow, capability: general, prompt: 'paused-leader-5 [[delay=2000]]' }\n"),
    ]);
    await w.waitForLine(/Task assigned task=slow/, 20_000);
    c1.signal("SIGSTOP");
    await c2.waitForLine(/Coordinator leading/, 10_000);
    const r = await s.done;
    expect(r.code).toBe(0);
    const before = c1.lines.length;
    c1.signal("SIGCONT");
    await c1.waitForLine(/Coordinator stepped down/, 10_000);
    await waitFor(
      "the old leader to hand the request back",
      () => c1.lines.slice(before).some((l) => /Request handed back|stepped down/.test(l)),
      10_000,
    );
    const after = c1.lines.slice(before);
    expect(after.some((l) => /Request answered|Request planned|Task assigned/.test(l))).toBe(false);
    expect(await storedAnswers(hid, requestOf(r.events))).toBe(1);
    expect(c2.countLines(/Coordinator stepped down/)).toBe(0); // never two leaders: c2 kept the lease
  });

  test("a NATS restart: nodes reconnect by themselves, the dashboard shows the outage, nothing is lost", async () => {
    const hid = "fo5";
    const c = coordinator(hid);
    const w = worker(hid);
    // Every change in its own frame (a 1.5 s outage would fall between the default 5 s frames of a log).
    const board = spawnRole("dashboard.ts", [...common(hid), "--log.dashboard_interval", "0s"], { home: tempHome() });
    procs.push(board);
    await joined(c, w);
    await board.waitForLine(/NATS:\s+✓ Yes/);
    const s = submitInBackground(hid, [
      "--plan",
      planFile(
        "tasks:\n  - { id: a, capability: general, prompt: 'restart-a [[delay=1500]]' }\n  - { id: b, capability: general, depends_on: [a], prompt: 'restart-b [[delay=500]]' }\n",
      ),
    ]);
    await w.waitForLine(/Task assigned task=a/, 20_000);
    await nats.restart({ downMs: 1_500 });
    for (const p of [c, w]) {
      await p.waitForLine(/NATS disconnected, reconnecting/, 10_000);
      await p.waitForLine(/NATS reconnected/, 20_000);
    }
    await board.waitForLine(/NATS:\s+✗ No\s+nats:\/\/127\.0\.0\.1:\d+ \(reconnecting\)/, 10_000);
    const r = await s.done;
    expect(r.code).toBe(0);
    expect(r.events.find((e) => e.kind === "answer")?.status).toBe("completed");
    const tail = board.lines.slice(board.lines.findLastIndex((l) => l.includes("✗ No")));
    expect(tail.some((l) => /NATS:\s+✓ Yes/.test(l)) || (await board.waitForLine(/NATS:\s+✓ Yes/, 10_000)) !== undefined).toBe(true);
  });
});

describe("a leader through NATS restarts", () => {
  /**
   * A coordinator with the default lease (10 s) and two workers; N requests of three sub-tasks (two in
   * parallel, one after both) and an LLM synthesis; three NATS restarts (the second a SIGKILL: JetStream
   * recovers its store on start), each `gapMs()` after the coordinator reconnected. The first four
   * requests go in at once, the rest after the first restart, so the blips find requests being planned,
   * run, recorded and answered.
   */
  async function throughRestarts(hid: string, gapMs: () => number, slowMs: number) {
    const c = start("coordinator.ts", hid, ["--swarm.max_concurrent", "10"]);
    const workers = [0, 1].map(() => start("worker.ts", hid, ["--swarm.max_concurrent", "8"]));
    await joined(c, ...workers);
    const N = 8;
    // The submitters ride out the restarts too (tested on their own in test/client-outage.test.ts).
    const submit = (i: number) =>
      submitInBackground(hid, [
        "--swarm.nats.connect_timeout",
        "60s",
        "--plan",
        planFile(
          "tasks:\n" +
            `  - { id: a, capability: general, prompt: '${hid}-${i}-a [[delay=${slowMs / 3 + (i % 4) * (slowMs / 5)}]]' }\n` +
            `  - { id: b, capability: general, prompt: '${hid}-${i}-b [[delay=${slowMs - (i % 4) * (slowMs / 5)}]]' }\n` +
            `  - { id: c, capability: general, depends_on: [a, b], prompt: '${hid}-${i}-c [[delay=${slowMs / 2}]]' }\n`,
        ),
        `${hid} request ${i}`,
      ]);
    const subs = [0, 1, 2, 3].map(submit);
    await c.waitForLine(/Task assigned/, 20_000);
    for (const hard of [false, true, false]) {
      const reconnects = c.countLines(/NATS reconnected/);
      await nats.restart({ hard, downMs: 600 });
      await waitFor("the coordinator to reconnect", () => c.countLines(/NATS reconnected/) > reconnects, 20_000);
      if (subs.length < N) subs.push(...[4, 5, 6, 7].map(submit));
      await Bun.sleep(gapMs()); // a random moment for the next one, not a wait for an event
    }
    const results = await Promise.all(subs.map((s) => s.done));
    const syntheses = Array.from(
      { length: N },
      (_, i) =>
        llm.requests.filter(
          (q) =>
            (q.body.messages?.[0]?.content ?? "").startsWith("You merge") &&
            (q.body.messages?.at(-1)?.content ?? "").includes(`Request:\n${hid} request ${i}\n`),
        ).length,
    );
    // In time order: info lines come on stdout, warnings on stderr, so their arrival can swap.
    const leadership = c.lines
      .filter((l) => /Coordinator (leading|stepped down)|handed back|handling failed/.test(l))
      .map((l, i) => ({ l, i, at: Date.parse(l.slice(0, 24)) }))
      .sort((a, b) => a.at - b.at || a.i - b.i)
      .map((x) => x.l);
    console.log(
      `leader through 3 NATS restarts (${hid}): ${results.filter((r) => r.code === 0).length} of ${N} answered; ` +
        `${c.countLines(/NATS did not answer; retrying/)} steps retried in place (warn); ` +
        `${c.countLines(/Coordinator stepped down/)} step-downs, ${c.countLines(/Request handed back/)} handed back, ` +
        `${c.countLines(/Request handling failed/)} handling failures; syntheses per request ${syntheses.join(",")}`,
    );
    const outcome = (r: (typeof results)[number], i: number) =>
      r.code === 0
        ? `0 ${r.events.find((e) => e.kind === "answer")?.status}`
        : `${r.code}: ${subs[i]!.p.output().split("\n").slice(-3).join(" | ")} || the coordinator on it: ${c.lines
            .filter((l) => r.events.some((e) => l.includes(e.request)) || /marked offline/.test(l))
            .filter((l) => /WARN|ERROR|marked offline/.test(l))
            .join(" | ")}`;
    expect(results.map(outcome)).toEqual(Array.from({ length: N }, () => "0 completed"));
    for (const r of results) expect(r.events.filter((e) => e.kind === "answer")).toHaveLength(1);
    // Nothing finished was redone: one synthesis per request (recorded before it is answered).
    expect(syntheses).toEqual(Array.from({ length: N }, () => 1));
    // A blip is retried in place, never counted as a failure of the request.
    expect(leadership.filter((l) => /handling failed/.test(l))).toEqual([]);
    return { leadership };
  }

  test("blips seconds apart: it keeps its lease, hands nothing back, counts no failure, does no step twice", async () => {
    // The lease is renewed every third of its TTL, tried again at once when a renewal was lost: a blip of
    // about a second (reconnect and JetStream's recovery included) must not cost it.
    const { leadership } = await throughRestarts("fo6", () => 3_500 + Math.random() * 1_500, 3_000);
    expect(leadership.filter((l) => !/Coordinator leading/.test(l))).toEqual([]);
  }, 150_000);

  test("blips back to back: a request is handed back only after the lease went stale, and still nothing is done twice", async () => {
    // Three restarts within a few seconds can keep every renewal from landing for two thirds of the TTL:
    // then stepping down is right (no fresh lease, no writes), and its requests go back to the queue.
    const { leadership } = await throughRestarts("fo7", () => 300 + Math.random() * 900, 1_500);
    // Each hand-back falls in a term that ended in a step-down (the watchdog may say so just after it).
    leadership.forEach((l, i) => {
      if (!/handed back/.test(l)) return;
      const before = leadership.slice(0, i).findLast((x) => /Coordinator (leading|stepped down)/.test(x)) ?? "";
      const after = leadership.slice(i + 1).find((x) => /Coordinator (leading|stepped down)/.test(x)) ?? "";
      expect(`${l} :: ${/stepped down/.test(before) || /stepped down/.test(after) ? "after a step-down" : "while leading"}`).toEndWith(
        "after a step-down",
      );
    });
  }, 150_000);
});

describe("drain", () => {
  test("SIGTERM lets the running sub-task finish on the node, then it leaves", async () => {
    const hid = "dr1";
    const c = coordinator(hid);
    const w = worker(hid, ["--swarm.drain_grace", "20s"]);
    await joined(c, w);
    const s = submitInBackground(hid, ["--capabilities", "general", "drain-me-8 [[delay=2000]]"]);
    await w.waitForLine(/Task assigned/, 20_000);
    w.signal("SIGTERM");
    await w.waitForLine(/Draining: waiting for running sub-tasks/);
    expect(await w.exited(30_000)).toBe(0);
    expect(w.countLines(/Task completed/)).toBe(1);
    expect(w.output()).toContain("Node left swarm");
    expect((await s.done).code).toBe(0);
    expect(calls("drain-me-8")).toBe(1);
    expect(c.countLines(new RegExp(`Node marked offline node=${selfId(w)}`))).toBe(0);
  });

  test("`picoclaw drain NODE` past its grace hands the sub-task back; another node completes it at once", async () => {
    const hid = "dr2";
    const c = coordinator(hid);
    const w1 = worker(hid, ["--swarm.drain_grace", "300ms"]);
    await joined(c, w1);
    const s = submitInBackground(hid, ["--capabilities", "general", "handback-9 [[delay=4000]]"]);
    await w1.waitForLine(/Task assigned/, 20_000);
    const w2 = worker(hid);
    await joined(w2);
    const d = await runRole("picoclaw.ts", ["drain", selfId(w1), ...common(hid)]);
    expect(d.code).toBe(0);
    expect(d.stdout).toContain(`${selfId(w1)}: drain started`);
    await w1.waitForLine(/Task handed back/, 10_000);
    expect(await w1.exited(20_000)).toBe(0);
    await w2.waitForLine(/Task completed/, 20_000);
    expect((await s.done).code).toBe(0);
    const unknown = await runRole("picoclaw.ts", ["drain", "claw-00000000", ...common(hid)]);
    expect(unknown.code).toBe(1);
    expect(unknown.output).toContain("no node claw-00000000 answered");
  });
});

describe("poison sub-tasks", () => {
  test("failing every attempt: failed after max_deliver with each attempt's error; the rest goes on", async () => {
    const hid = "po1";
    const c = coordinator(hid, ["--swarm.tasks.max_deliver", "3"]);
    const w = worker(hid, ["--swarm.tasks.max_deliver", "3"]);
    await joined(c, w);
    const plan = planFile(
      "tasks:\n  - { id: poison, capability: general, required: false, prompt: 'always-503 [[status=503]]' }\n  - { id: fine, capability: general, prompt: 'fine-work' }\n",
    );
    const r = await submitInBackground(hid, ["--plan", plan]).done;
    expect(r.code).toBe(0);
    const answer = r.events.find((e) => e.kind === "answer");
    expect(answer?.status).toBe("partial");
    expect(answer?.answer).toContain("## poison (general) — FAILED");
    expect(answer?.answer).toMatch(/attempt 1 on claw-\S+: 503[\s\S]*attempt 2 on[\s\S]*attempt 3 on/);
    expect(answer?.answer).toContain("## fine (general) — completed");
    expect(calls("always-503")).toBe(3);
  });

  test("crashing its node every attempt: failed from the max-deliveries advisory; the request still answers", async () => {
    const hid = "po2";
    const c = coordinator(hid, ["--swarm.tasks.max_deliver", "2"]);
    const docs = start("specialist.ts", hid, ["--swarm.capabilities", "docs", "--swarm.tasks.max_deliver", "2", ...ACK]);
    const first = worker(hid, ["--swarm.tasks.max_deliver", "2"]);
    await joined(c, docs, first);
    await c.waitForLine(new RegExp(`Node joined swarm node=${selfId(first)}`));
    const plan = planFile(
      "tasks:\n  - { id: crasher, capability: general, required: false, prompt: 'crash-me [[delay=5000]]' }\n  - { id: ok, capability: docs, prompt: 'ok-work' }\n",
    );
    const s = submitInBackground(hid, ["--plan", plan]);
    // Each worker that takes the crasher dies (SIGKILL) mid-call; a fresh one replaces it.
    await first.waitForLine(/Task assigned task=crasher/, 30_000);
    first.signal("SIGKILL");
    const second = worker(hid, ["--swarm.tasks.max_deliver", "2"]);
    await second.waitForLine(/Task assigned task=crasher/, 30_000);
    second.signal("SIGKILL");
    // JetStream notices the exhausted sub-task when it next tries to deliver: a healthy worker is pulling.
    const survivor = worker(hid, ["--swarm.tasks.max_deliver", "2"]);
    await joined(survivor);
    const r = await s.done;
    expect(r.code).toBe(0);
    const answer = r.events.find((e) => e.kind === "answer");
    expect(answer?.answer).toContain("## crasher (general) — FAILED");
    expect(answer?.answer).toContain("gave up after 2 attempts");
    expect(answer?.answer).toContain("## ok (docs) — completed");
    await c.waitForLine(/Task failed task=crasher .*gave up after 2 attempts/);
  });

  test("a sub-task pinned to a node that dies is re-routed to its capability queue", async () => {
    const hid = "pin1";
    const c = coordinator(hid);
    const w1 = worker(hid);
    const w2 = worker(hid);
    await joined(c, w1, w2);
    await c.waitForLine(new RegExp(`Node joined swarm node=${selfId(w1)}`));
    const plan = planFile(`tasks:\n  - { id: pinned, capability: general, node: ${selfId(w1)}, prompt: 'pinned-7 [[delay=4000]]' }\n`);
    const s = submitInBackground(hid, ["--plan", plan]);
    await w1.waitForLine(/Task assigned task=pinned/, 20_000);
    w1.signal("SIGKILL");
    await c.waitForLine(/Task re-routed task=pinned/, 10_000);
    await w2.waitForLine(/Task completed task=pinned/, 20_000);
    expect((await s.done).code).toBe(0);
  });
});
