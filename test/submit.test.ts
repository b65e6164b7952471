// `picoclaw submit` as users call it: text from stdin or a file, the offline echo provider named in the
// answer, human output without --json, and long sub-tasks kept alive past JetStream's ack wait.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runRole, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { planFile, submit } from "./helpers/swarm.ts";

const suite = swarmSuite();

const echoEnv = ECHO_ENV;

describe("submit", () => {
  test("stdin ('-') and --file; with no LLM configured the answer says the echo provider was used", async () => {
    const swarm = await suite.start("s1", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", env: echoEnv },
    ]);
    expect(swarm.nodes[1]!.output()).toContain("LLM: echo provider (offline, no LLM configured)");
    const fromStdin = await submit(swarm, ["-"], 30_000, "Summarise: stdin-marker-7781");
    expect(fromStdin.code).toBe(0);
    expect(fromStdin.answer?.answer).toContain("stdin-marker-7781");
    expect(fromStdin.answer?.answer).toContain("LLM: echo (offline, no LLM configured)");

    const diff = join(tempHome(), "change.diff");
    writeFileSync(diff, "--- a/x.ts\n+++ b/x.ts\n+const token = 'file-marker-5521';\n");
    const fromFile = await submit(swarm, ["--file", diff], 30_000);
    expect(fromFile.code).toBe(0);
    expect(fromFile.answer?.answer).toContain("file-marker-5521");
    expect(fromFile.answer?.answer).toContain("## code review"); // a diff is a review request
  });

  test("without --json: progress lines on stderr, the answer alone on stdout, exit 0", async () => {
    const swarm = await suite.start("s2", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", env: echoEnv },
    ]);
    const r = await runRole("picoclaw.ts", ["submit", ...swarm.common, "Explain backoff"], { timeoutMs: 30_000 });
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith("# Swarm answer (request r-")).toBe(true);
    expect(r.output).toMatch(/request r-[0-9a-f]+ accepted by coordinator claw-[0-9a-f]{8}/);
    expect(r.output).toMatch(/planned by the heuristic planner: general task \[general\]/);
    expect(r.output).toMatch(/general task: running on claw-[0-9a-f]{8}/);
    expect(r.output).toMatch(/general task: completed on claw-[0-9a-f]{8} in \d+m?s \(run time on the node\), \d+ tokens/);
  });

  test("the live lines and the answer give each sub-task the same time (run time on the node) and tokens", async () => {
    const swarm = await suite.start("s4", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", args: ["--swarm.max_concurrent", "2"], env: suite.llmEnv() },
    ]);
    const plan = planFile(
      "tasks:\n" +
        "  - { id: one, title: first part, capability: general, prompt: 'first [[delay=300]] [[tokens=7]]' }\n" +
        "  - { id: two, title: second part, capability: general, prompt: 'second one, longer [[delay=600]] [[tokens=3]]' }\n",
    );
    const r = await runRole("picoclaw.ts", ["submit", ...swarm.common, "--plan", plan], { timeoutMs: 30_000 });
    expect(r.code).toBe(0);
    // `  first part: completed on claw-x in 312ms (run time on the node), 57 tokens` (stderr, not a terminal)
    const live = new Map(
      [...r.output.matchAll(/^ {2}(.+): completed on (claw-[0-9a-f]{8}) in (\S+) \(run time on the node\), (\d+) tokens$/gm)].map((m) => [
        m[1]!,
        { node: m[2]!, time: m[3]!, tokens: Number(m[4]) },
      ]),
    );
    // `## first part — completed` / `node claw-x · capability general · 312ms (run time on the node) · attempt 1 · 57 tokens`
    const answered = new Map(
      [
        ...r.stdout.matchAll(
          /^## (.+) — completed\nnode (claw-[0-9a-f]{8}) · capability \S+ · (\S+) \(run time on the node\) · attempt \d+ · (\d+) tokens/gm,
        ),
      ].map((m) => [m[1]!, { node: m[2]!, time: m[3]!, tokens: Number(m[4]) }]),
    );
    expect([...live.keys()].sort()).toEqual(["first part", "second part"]);
    expect(live).toEqual(answered);
    // Real numbers, not zeros: each took its delay, and its tokens are the prompt's and the reply's.
    for (const v of live.values()) {
      expect(v.time).toMatch(/^\d{3}ms$|^\d+s$/);
      expect(v.tokens).toBeGreaterThan(7);
    }
  });

  test("bad submit arguments exit 2 naming what is wrong", async () => {
    const none = await runRole("picoclaw.ts", ["submit", "--swarm.nats.urls", suite.nats.url]);
    expect(none.code).toBe(2);
    expect(none.output).toContain("picoclaw submit: no request: give its text, '-' to read it from stdin, --file PATH or --plan PATH");
    expect(none.output).toContain("usage: picoclaw submit TEXT|-");
    const badPlan = join(tempHome(), "bad.yaml");
    writeFileSync(badPlan, "tasks:\n  - { id: 'a.b', capability: code, prompt: x }\n");
    const plan = await runRole("picoclaw.ts", ["submit", "--plan", badPlan, "--swarm.nats.urls", suite.nats.url]);
    expect(plan.code).toBe(2);
    expect(plan.output).toContain(`invalid plan in ${badPlan}: tasks[0].id`);
    const huge = join(tempHome(), "huge.txt");
    writeFileSync(huge, "x".repeat(70_000));
    const big = await runRole("picoclaw.ts", ["submit", "--file", huge, "--swarm.nats.urls", suite.nats.url]);
    expect(big.code).toBe(2);
    expect(big.output).toContain("at most swarm.tasks.max_prompt_bytes (65536 bytes)");
    const cap = await runRole("picoclaw.ts", ["submit", "--capabilities", "a>b", "x", "--swarm.nats.urls", suite.nats.url]);
    expect(cap.code).toBe(2);
    expect(cap.output).toContain("--capabilities");
  });

  test("a sub-task running longer than the ack wait is kept alive: it runs once, not again elsewhere", async () => {
    const env = { PICOCLAW_LLM_BASE_URL: suite.llm.url, PICOCLAW_LLM_MODEL: "m" };
    // Kept alive every third of it: 2 s leaves room for a stalled event loop on a loaded machine.
    const ackWait = ["--swarm.tasks.ack_wait", "2s"];
    const swarm = await suite.start("s3", [
      { script: "coordinator.ts", env: echoEnv },
      { script: "worker.ts", args: ackWait, env },
      { script: "worker.ts", args: ackWait, env },
    ]);
    const r = await submit(swarm, ["--capabilities", "general", "long job keepalive-9 [[delay=5000]]"]);
    expect(r.code).toBe(0);
    expect(suite.llm.requests.filter((q) => q.body.messages?.at(-1)?.content.includes("keepalive-9")).length).toBe(1);
    expect(r.events.filter((e) => e.kind === "started").length).toBe(1);
  });
});
