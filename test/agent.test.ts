// Workers are agents: a sub-task runs as a tool loop (OpenAI function calling) over the node's tools,
// each step recorded so another worker resumes a dead one's loop. Real nats-server, real role
// processes, a real OpenAI-style HTTP server scripted per test, a real MCP server over stdio.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { connect } from "nats";
import { freePort } from "../lib/embedded-nats.ts";
import { encode } from "../lib/messages.ts";
import type { ChatRequestBody, Reply } from "./helpers/llm-server.ts";
import { ROOT, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import { planFile, submit } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
afterEach(() => suite.llm.script(undefined));

type Msg = NonNullable<ChatRequestBody["messages"]>[number];
const toolMessages = (b: ChatRequestBody): Msg[] => (b.messages ?? []).filter((m) => m.role === "tool");
const userText = (b: ChatRequestBody) => String((b.messages ?? []).find((m) => m.role === "user")?.content ?? "");
const call = (name: string, args: unknown): { name: string; arguments: string } => ({
  name,
  arguments: typeof args === "string" ? args : JSON.stringify(args),
});

/** Scripts the model per scenario, named by a marker in the sub-task's prompt. */
function script(scenarios: Record<string, (b: ChatRequestBody) => Reply>) {
  suite.llm.script((b) => {
    for (const [marker, fn] of Object.entries(scenarios)) if (userText(b).includes(marker)) return fn(b);
    return undefined;
  });
}

const requestsFor = (marker: string) => suite.llm.requests.filter((r) => userText(r.body).includes(marker));

describe("the tool loop", () => {
  test("write, then read and list in one turn (two calls at once), then answer: the answer quotes the file; tool calls are listed", async () => {
    const workspace = join(tempHome(), "ws");
    script({
      "<files>": (b) => {
        const seen = toolMessages(b);
        if (seen.length === 0) return { tool_calls: [call("write_file", { path: "notes/a.txt", content: "hello swarm" })] };
        if (seen.length === 1) return { tool_calls: [call("read_file", { path: "notes/a.txt" }), call("list_dir", { path: "notes" })] };
        return `read back: ${seen.map((m) => m.content).join(" | ")}`;
      },
    });
    const swarm = await suite.start("ag1", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args: ["--agents.defaults.workspace", workspace], env: suite.llmEnv() },
    ]);
    const r = await submit(swarm, ["<files> keep a note"]);
    expect(r.code).toBe(0);
    const answer = r.answer!.answer!;
    expect(answer).toContain("hello swarm");
    expect(answer).toContain("a.txt");
    expect(readFileSync(join(workspace, "notes/a.txt"), "utf8")).toBe("hello swarm");
    // The model was offered the file tools, and got each call's result as a `tool` message.
    const reqs = requestsFor("<files>");
    expect(reqs.length).toBe(3);
    expect(reqs[0]!.body.tools!.map((t) => t.function.name)).toEqual(["append_file", "edit_file", "list_dir", "read_file", "write_file"]);
    expect(toolMessages(reqs[2]!.body).map((m) => m.content)).toEqual(["wrote 11 bytes to notes/a.txt", "hello swarm", "a.txt"]);
    // The answer lists the sub-task's tool calls.
    expect(answer).toMatch(/Tool calls: 3 .*write_file "notes\/a.txt".*read_file "notes\/a.txt".*list_dir "notes"/s);
    // Every iteration's tokens count: three LLM calls, not one.
    const used = reqs.reduce((n, q) => n + (q.usage?.total_tokens ?? 0), 0);
    expect(r.answer!.usage!.total_tokens).toBe(used);
  });

  test("a model that never stops calling tools: max_tool_iterations ends the loop, and the sub-task says so", async () => {
    script({ "<forever>": () => ({ tool_calls: [call("list_dir", { path: "." })] }) });
    const swarm = await suite.start("ag2", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args: ["--agents.defaults.max_tool_iterations", "3"], env: suite.llmEnv() },
    ]);
    const r = await submit(swarm, ["<forever> look around"]);
    expect(r.code).toBe(0);
    expect(r.answer!.answer!).toContain("Stopped after 3 tool iterations (agents.defaults.max_tool_iterations)");
    expect(requestsFor("<forever>").length).toBe(3);
  });

  test("malformed arguments, an unknown tool and a path outside the workspace are tool errors the model sees; the loop goes on", async () => {
    script({
      "<mistakes>": (b) => {
        const seen = toolMessages(b);
        if (seen.length === 0)
          return {
            tool_calls: [call("read_file", '{"path": '), call("rm_everything", {}), call("read_file", { path: "../../etc/passwd" })],
          };
        return `saw: ${seen.map((m) => m.content).join(" | ")}`;
      },
    });
    const port = await freePort();
    const swarm = await suite.start("ag3", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args: ["--swarm.http.listen", `127.0.0.1:${port}`], env: suite.llmEnv() },
    ]);
    const r = await submit(swarm, ["<mistakes> try things"]);
    expect(r.code).toBe(0);
    const second = toolMessages(requestsFor("<mistakes>")[1]!.body).map((m) => m.content);
    expect(second[0]).toContain("the arguments of read_file are not a JSON object");
    expect(second[1]).toContain('no tool named "rm_everything"');
    expect(second[2]).toMatch(/outside the workspace/);
    expect(r.answer!.answer!).toContain("saw: error:");
    // Counted in /metrics by tool and outcome (an unknown name under one label, not its own series).
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toContain('picoclaw_tool_calls_total{outcome="bad_arguments",tool="read_file"} 1');
    expect(metrics).toContain('picoclaw_tool_calls_total{outcome="unknown_tool",tool="(unknown)"} 1');
    expect(metrics).toContain('picoclaw_tool_calls_total{outcome="refused",tool="read_file"} 1');
    expect(metrics).toMatch(/picoclaw_tool_call_duration_seconds_count\{tool="read_file"\} 2/);
  });

  test("streamed and plain: the loop works against a server that sends tool-call deltas in pieces", async () => {
    // The provider always streams; the scripted server cuts each call's arguments into fragments.
    script({
      "<pieces>": (b) =>
        toolMessages(b).length === 0
          ? { tool_calls: [call("write_file", { path: "long.txt", content: "a fairly long content, cut into several fragments" })] }
          : `done: ${toolMessages(b)[0]!.content}`,
    });
    const workspace = join(tempHome(), "ws");
    const swarm = await suite.start("ag4", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args: ["--agents.defaults.workspace", workspace], env: suite.llmEnv() },
    ]);
    const r = await submit(swarm, ["<pieces> write"]);
    expect(r.code).toBe(0);
    expect(readFileSync(join(workspace, "long.txt"), "utf8")).toBe("a fairly long content, cut into several fragments");
    expect(requestsFor("<pieces>")[0]!.body.stream).toBe(true);
  });
});

describe("tools are part of routing", () => {
  test("a sub-task that needs exec goes to the node that has it; with none online it fails naming the tool", async () => {
    script({
      "<needs-exec>": (b) =>
        toolMessages(b).length === 0 ? { tool_calls: [call("exec", { command: "expr 6 \\* 7" })] } : `ran: ${toolMessages(b)[0]!.content}`,
    });
    const swarm = await suite.start("ag5", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", env: suite.llmEnv() },
      { script: "worker.ts", args: ["--tools.exec.enabled"], env: suite.llmEnv() },
      { script: "worker.ts", env: suite.llmEnv() },
    ]);
    const plan = planFile("tasks:\n  - { id: run, capability: general, tools: [exec], prompt: '<needs-exec> run it' }\n");
    for (let i = 0; i < 3; i++) {
      const r = await submit(swarm, ["--plan", plan]);
      expect(r.code).toBe(0);
      expect(r.answer!.answer!).toContain("ran: 42");
      const started = r.events.find((e) => e.kind === "started" && "task" in e && e.task === "run") as { node?: string };
      expect(started.node).toBe(swarm.ids[2]!);
    }
    // The heartbeat says which tools each node has: the coordinator saw exec only on the second worker.
    swarm.nodes[2]!.signal("SIGTERM");
    await swarm.nodes[2]!.exited(15_000);
    await swarm.nodes[0]!.waitForLine(new RegExp(`Node left swarm node=${swarm.ids[2]}`), 15_000);
    const r = await submit(swarm, ["--plan", plan]);
    expect(r.code).not.toBe(0);
    expect(r.output).toContain("task run needs tool exec, which no online node offers with capability general");
  });
});

describe("durable steps", () => {
  test("a worker SIGKILLed during the third of five calls of a side-effecting MCP tool: another worker finishes, calls 1-3 ran once each", async () => {
    const dir = tempHome();
    const counter = join(dir, "counter.txt");
    writeFileSync(counter, "");
    const mcp = JSON.stringify({
      counter: { command: "bun", args: [resolve(ROOT, "test/fixtures/mcp-counter-server.ts"), counter] },
    });
    script({
      "<durable>": (b) => {
        const seen = toolMessages(b);
        if (seen.length < 5) {
          const n = seen.length + 1;
          return { tool_calls: [call("mcp_counter_increment", { label: `call-${n}`, delay_ms: n === 3 ? 30_000 : 0 })] };
        }
        return `all five: ${seen.map((m) => m.content).join(" | ")}`;
      },
    });
    const fast = ["--swarm.tasks.ack_wait", "2s", "--swarm.drain_grace", "0"];
    const env = { ...suite.llmEnv(), PICOCLAW_TOOLS_MCP_SERVERS: mcp };
    const swarm = await suite.start("ag6", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args: fast, env },
    ]);
    const submitted = submit(swarm, ["<durable> count five times"], 90_000);
    const lines = () => readFileSync(counter, "utf8").split("\n").filter(Boolean);
    await waitFor("the third call to reach the counter", () => lines().length >= 3, 30_000);
    swarm.nodes[1]!.signal("SIGKILL");
    const second = spawnRole("worker.ts", [...swarm.common, ...fast], { env });
    try {
      const r = await submitted;
      expect(r.code).toBe(0);
      expect(lines()).toEqual(["call-1", "call-2", "call-3", "call-4", "call-5"]);
      const answer = r.answer!.answer!;
      expect(answer).toContain("counted call-5");
      expect(answer).toContain("interrupted: the worker running this call stopped before its result was recorded");
      const done = r.events.find((e) => e.kind === "completed" && "task" in e && e.task) as { node?: string };
      expect(done.node).not.toBe(swarm.ids[1]);
    } finally {
      second.signal("SIGTERM");
      await second.exited(15_000).catch(() => second.proc.kill("SIGKILL"));
    }
  });
});

describe("the guide's code review, for real", () => {
  test("four specialists with a git repository as their workspace read the files and the diff; the review quotes them", async () => {
    const repo = join(tempHome(), "repo");
    const git = (...args: string[]) => {
      const r = Bun.spawnSync(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", ...args], { cwd: repo });
      if (r.exitCode !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr.toString()}`);
    };
    mkdirSync(join(repo, "src"), { recursive: true });
    writeFileSync(join(repo, "src/retry.ts"), "export const attempts = 3;\n");
    git("init", "-q");
    git("add", ".");
    git("commit", "-qm", "first");
    writeFileSync(join(repo, "src/retry.ts"), "export const attempts = 5; // retry failed HTTP calls\n");
    git("commit", "-qam", "retry failed HTTP calls five times");
    script({
      "Review the last commit": (b) => {
        const seen = toolMessages(b);
        if (seen.length === 0) return { tool_calls: [call("list_dir", { path: "src" })] };
        if (seen.length === 1) return { tool_calls: [call("read_file", { path: "src/retry.ts" })] };
        if (seen.length === 2) return { tool_calls: [call("exec", { command: "git diff HEAD~1" })] };
        return `Reviewed: ${seen.map((m) => m.content.trim()).join(" || ")}`;
      },
    });
    const ws = ["--agents.defaults.workspace", repo, "--tools.exec.enabled"];
    const swarm = await suite.start("ag7", [
      { script: "coordinator.ts", args: ["--swarm.capabilities", "coordination"], env: ECHO_ENV },
      { script: "specialist.ts", args: ["--swarm.capabilities", "rust,go,python", ...ws], env: suite.llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "security,audit", ...ws], env: suite.llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "docs,writing", ...ws], env: suite.llmEnv() },
      { script: "specialist.ts", args: ["--swarm.capabilities", "testing,qa", ...ws], env: suite.llmEnv() },
    ]);
    const r = await submit(swarm, ["Review the last commit"]);
    expect(r.code).toBe(0);
    const answer = r.answer!.answer!;
    for (const section of [
      "## code review — completed",
      "## security review — completed",
      "## docs review — completed",
      "## testing review — completed",
    ])
      expect(answer).toContain(section);
    // Each specialist read the file and the diff: four quotes of each.
    expect(answer.split("export const attempts = 5; // retry failed HTTP calls").length - 1).toBeGreaterThanOrEqual(4);
    expect(answer.split("-export const attempts = 3;").length - 1).toBe(4);
    expect(answer.split("Tool calls: 3 · list_dir").length - 1).toBe(4);
    // submit printed each tool call as it ended.
    const toolEvents = r.events.filter((e) => e.kind === "tool") as { tool?: string; outcome?: string }[];
    expect(toolEvents.length).toBe(12);
    expect(toolEvents.filter((e) => e.tool === "exec" && e.outcome === "ok").length).toBe(4);
  });
});

describe("a node's tools at start-up", () => {
  test("isolation: a stdio MCP server runs inside bubblewrap, seeing its install path (allow_read_paths) and the workspace only", async () => {
    const workspace = join(tempHome(), "ws");
    mkdirSync(workspace, { recursive: true });
    const counter = join(workspace, "counter.txt");
    const outside = join(tempHome(), "outside.txt");
    writeFileSync(outside, "secret outside the workspace\n");
    const mcp = JSON.stringify({ counter: { command: "bun", args: [resolve(ROOT, "test/fixtures/mcp-counter-server.ts"), counter] } });
    script({
      "<isolated>": (b) => {
        const seen = toolMessages(b);
        if (seen.length === 0) return { tool_calls: [call("mcp_counter_increment", { label: "inside" })] };
        if (seen.length === 1) return { tool_calls: [call("exec", { command: `cat ${outside}` })] };
        return `results: ${seen.map((m) => m.content).join(" | ")}`;
      },
    });
    const args = ["--tools.isolation.enabled", "--tools.exec.enabled", "--agents.defaults.workspace", workspace];
    const swarm = await suite.start("ag11", [
      { script: "coordinator.ts", env: ECHO_ENV },
      {
        script: "worker.ts",
        args: [...args, "--tools.allow_read_paths", ROOT],
        env: { ...suite.llmEnv(), PICOCLAW_TOOLS_MCP_SERVERS: mcp },
      },
    ]);
    const r = await submit(swarm, ["<isolated> count and look"]);
    expect(r.code).toBe(0);
    const answer = r.answer!.answer!;
    expect(answer).toContain("counted inside (call #1)");
    expect(readFileSync(counter, "utf8")).toBe("inside\n");
    expect(answer).not.toContain("secret outside the workspace");
    expect(answer).toMatch(/No such file or directory/);
    // The MCP server itself runs under bubblewrap (its process is bwrap's child, with the fixture as argument).
    const ps = Bun.spawnSync(["ps", "-eo", "args"]).stdout.toString();
    expect(ps.split("\n").some((l) => /\bbwrap\b.*--unshare-all.*mcp-counter-server\.ts/.test(l) && l.includes(counter))).toBe(true);
  });

  test("a required MCP server that cannot start stops the worker in one line; an optional one is left out with a warning", async () => {
    const common = ["--swarm.nats.urls", suite.nats.url, "--swarm.hid", "ag8"];
    const ghost = JSON.stringify({ ghost: { command: "/nonexistent/mcp-ghost" } });
    const failed = await runRole("worker.ts", common, { env: { ...ECHO_ENV, PICOCLAW_TOOLS_MCP_SERVERS: ghost }, timeoutMs: 20_000 });
    expect(failed.code).toBe(1);
    expect(failed.output).toContain('picoclaw: MCP server "ghost" failed to start: command not found: /nonexistent/mcp-ghost');
    expect(failed.output).not.toMatch(/\n\s+at /); // no stack trace

    const optional = JSON.stringify({ ghost: { command: "/nonexistent/mcp-ghost", optional: true } });
    const p = spawnRole("worker.ts", common, { env: { ...ECHO_ENV, PICOCLAW_TOOLS_MCP_SERVERS: optional } });
    try {
      await p.waitForLine(/Node joined swarm .*self=true/, 15_000);
      expect(p.countLines(/WARN .*ghost/)).toBe(1);
    } finally {
      p.signal("SIGTERM");
      await p.exited(15_000).catch(() => p.proc.kill("SIGKILL"));
    }

    const both = JSON.stringify({ x: { command: "node", url: "http://127.0.0.1:1/mcp" } });
    const bad = await runRole("worker.ts", common, { env: { ...ECHO_ENV, PICOCLAW_TOOLS_MCP_SERVERS: both } });
    expect(bad.code).toBe(2);
    expect(bad.output).toContain("tools.mcp.servers.x");
    expect(bad.output).toContain("either command (stdio) or url (streamable HTTP), not both");
  });
});

describe("the loop's bounds", () => {
  test("a forged end of the request (an unsigned answer event) costs the loop a hand-back, never the work: it resumes and finishes", async () => {
    const workspace = join(tempHome(), "ws");
    script({
      "<forged-end>": (b) => {
        const seen = toolMessages(b).length;
        if (seen < 4) return { tool_calls: [call("append_file", { path: "log.txt", content: `line ${seen + 1}\n` })] };
        return `done after ${seen} calls`;
      },
    });
    const swarm = await suite.start("ag12", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args: ["--agents.defaults.workspace", workspace], env: suite.llmEnv() },
    ]);
    const submitted = submit(swarm, ["<forged-end> [[delay=300]] write four lines"], 90_000);
    const worker = swarm.nodes[1]!;
    const request = (await worker.waitForLine(/Task assigned .*request=(r-\S+)/, 20_000)).match(/request=(r-\S+)/)![1]!;
    await waitFor("a line written", () => existsSync(join(workspace, "log.txt")), 20_000);
    const nc = await connect({ servers: suite.nats.url });
    try {
      const forged = { v: 1, request, kind: "answer", at: Date.now(), coordinator: "claw-00000000", answer: "FORGED", status: "completed" };
      nc.publish(`picoclaw.ag12.event.request.${request}`, encode(forged));
      await nc.flush();
    } finally {
      await nc.close();
    }
    await worker.waitForLine(/Sub-task stopped: its request has ended/, 10_000);
    // (The unsigned submit believes the forged answer: only signing protects clients; see docs/security.md.)
    await submitted;
    // The sub-task came back and ran to its end, each call once.
    await worker.waitForLine(/Task completed task=general request=/, 30_000);
    expect(readFileSync(join(workspace, "log.txt"), "utf8")).toBe("line 1\nline 2\nline 3\nline 4\n");
    expect(
      requestsFor("<forged-end>")
        .at(-1)!
        .body.messages!.filter((m) => m.role === "tool").length,
    ).toBe(4);
  });

  test("every iteration counts against max_tokens_per_request: a model that keeps calling tools is stopped by the request's limit", async () => {
    script({ "<greedy>": () => ({ tool_calls: [call("list_dir", { path: "." })] }) });
    const swarm = await suite.start("ag9", [
      { script: "coordinator.ts", args: ["--swarm.tasks.max_tokens_per_request", "3000"], env: ECHO_ENV },
      { script: "worker.ts", args: ["--agents.defaults.max_tool_iterations", "400"], env: suite.llmEnv() },
    ]);
    const r = await submit(swarm, ["<greedy> [[delay=40]] list forever"], 90_000);
    expect(r.answer?.kind).toBe("answer");
    expect(r.answer!.status).toBe("failed");
    expect(r.answer!.answer!).toMatch(/stopped: the request used \d+ tokens, more than swarm.tasks.max_tokens_per_request \(3000\)/);
    // Stopped by the tokens of many iterations, long before the loop's own limit.
    const calls = requestsFor("<greedy>").length;

    expect(calls).toBeGreaterThan(3);
    expect(calls).toBeLessThan(400);
  });

  test("every iteration waits its turn in swarm.llm.tokens_per_minute: a loop of four model calls spreads over the budget windows", async () => {
    // A share far below one call: each call needs a window of its own (an empty window takes any call).
    script({
      "<budgeted>": (b) => (toolMessages(b).length < 3 ? { tool_calls: [call("list_dir", { path: "." })] } : "listed three times"),
    });
    const budget = ["--swarm.llm.tokens_per_minute", "1", "--swarm.llm.token_window", "1s", "--log.level", "debug"];
    const swarm = await suite.start("ag12", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args: budget, env: suite.llmEnv() },
    ]);
    const worker = swarm.nodes[1]!;
    const waitsBefore = worker.countLines(/Waiting for the swarm's token budget/);
    const r = await submit(swarm, ["--capabilities", "general", "<budgeted> list the workspace three times"], 60_000);
    expect({ code: r.code, status: r.answer?.status }).toEqual({ code: 0, status: "completed" });
    const arrivals = requestsFor("<budgeted>").map((q) => q.at);
    expect(arrivals).toHaveLength(4);
    // A call that found its window taken waited for the next one: the four calls (milliseconds apart
    // without the budget) spread over the windows. At least three: a call charged in a window's last
    // milliseconds can reach the server in the next one.
    expect(new Set(arrivals.map((at) => Math.floor(at / 1_000))).size).toBeGreaterThanOrEqual(3);
    expect(worker.countLines(/Waiting for the swarm's token budget/) - waitsBefore).toBeGreaterThanOrEqual(1);
    expect(Math.max(...arrivals) - Math.min(...arrivals)).toBeGreaterThan(1_000);
  }, 90_000);

  test("the sub-task's timeout bounds the whole loop: a model that keeps calling tools is stopped at it", async () => {
    script({ "<endless>": () => ({ tool_calls: [call("list_dir", { path: "." })] }) });
    const swarm = await suite.start("ag13", [
      { script: "coordinator.ts", env: ECHO_ENV },
      {
        script: "worker.ts",
        args: ["--agents.defaults.max_tool_iterations", "1000", "--swarm.tasks.max_deliver", "1"],
        env: suite.llmEnv(),
      },
    ]);
    const plan = planFile("tasks:\n  - { id: loop, capability: general, timeout: 3s, prompt: '<endless> [[delay=200]] keep listing' }\n");
    const started = Date.now();
    const r = await submit(swarm, ["--plan", plan], 60_000);
    expect(r.answer?.status).toBe("failed");
    expect(r.answer!.answer!).toContain("**Failed:** timed out after 3000ms");
    const calls = requestsFor("<endless>").length;
    expect(calls).toBeGreaterThan(2); // it did loop
    expect(calls).toBeLessThan(1000 / 2); // stopped by the time, not by the iteration limit
    expect(Date.now() - started).toBeLessThan(30_000);
  }, 90_000);

  test("a worker stopped mid-loop hands the sub-task back; the next worker resumes from the recorded steps, not from the start", async () => {
    const workspace = join(tempHome(), "ws");
    script({
      "<handover>": (b) => {
        const seen = toolMessages(b).length;
        if (seen < 6) return { tool_calls: [call("append_file", { path: "log.txt", content: `line ${seen + 1}\n` })] };
        return `wrote six lines: ${readFileSync(join(workspace, "log.txt"), "utf8").trim().split("\n").length}`;
      },
    });
    const args = ["--agents.defaults.workspace", workspace, "--swarm.drain_grace", "0"];
    const swarm = await suite.start("ag10", [
      { script: "coordinator.ts", env: ECHO_ENV },
      { script: "worker.ts", args, env: suite.llmEnv() },
    ]);
    const submitted = submit(swarm, ["<handover> [[delay=400]] write six lines"], 90_000);
    await waitFor(
      "two lines written",
      () => existsSync(join(workspace, "log.txt")) && readFileSync(join(workspace, "log.txt"), "utf8").split("\n").length > 2,
      30_000,
    );
    const first = swarm.nodes[1]!;
    first.signal("SIGTERM");
    expect(await first.exited(15_000)).toBe(0);
    expect(first.countLines(/Task handed back/)).toBe(1);
    const before = requestsFor("<handover>").length;
    const second = spawnRole("worker.ts", [...swarm.common, ...args], { env: suite.llmEnv() });
    try {
      const r = await submitted;
      expect(r.code).toBe(0);
      // The same workspace: every line once, none written twice by the resumed loop.
      expect(readFileSync(join(workspace, "log.txt"), "utf8")).toBe("line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n");
      // The second worker's first call already had the first worker's tool results.
      const resumed = requestsFor("<handover>")[before]!;
      expect(toolMessages(resumed.body).length).toBeGreaterThanOrEqual(2);
    } finally {
      second.signal("SIGTERM");
      await second.exited(15_000).catch(() => second.proc.kill("SIGKILL"));
    }
  });
});
