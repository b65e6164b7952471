// Approvals: a tool call that tools.approval.required names waits for a person. The call is stored as
// pending, its sub-task parks (the worker holds no slot, JetStream spends no delivery), and `picoclaw
// approve` / `deny` decide it once, from any surface; the loop then goes on, on another node if need be,
// across worker deaths, coordinator failovers and NATS restarts. Real nats-server, real role processes,
// a real OpenAI-style HTTP server scripted per test.
import { afterEach, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "nats";
import { freePort } from "../lib/embedded-nats.ts";
import type { ChatRequestBody, Reply } from "./helpers/llm-server.ts";
import { type RoleProcess, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import type { Swarm, SwarmEvent } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const clients: RoleProcess[] = [];
afterEach(async () => {
  suite.llm.script(undefined);
  for (const c of clients.splice(0)) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
});

type Msg = NonNullable<ChatRequestBody["messages"]>[number];
const toolMessages = (b: ChatRequestBody): Msg[] => (b.messages ?? []).filter((m) => m.role === "tool");
const userText = (b: ChatRequestBody) => String((b.messages ?? []).find((m) => m.role === "user")?.content ?? "");

/** The model writes `file` once (saying why), then answers with what the tool told it. */
function writesOnce(marker: string, file: string, content: string) {
  suite.llm.script((b): Reply => {
    if (!userText(b).includes(marker)) return undefined;
    const seen = toolMessages(b);
    if (seen.length === 0)
      return {
        content: "I will write the release notes.",
        tool_calls: [{ name: "write_file", arguments: JSON.stringify({ path: file, content }) }],
      };
    return `tool said: ${seen.map((m) => m.content).join(" | ")}`;
  });
}

const APPROVE_WRITES = ["--tools.approval.required", "write_file,exec"];

/** `picoclaw submit --json` left running; resolves once it prints the pending call, with its id. */
async function submitUntilPending(swarm: Swarm, text: string) {
  const p = spawnRole("picoclaw.ts", ["submit", "--json", "--capabilities", "general", ...swarm.common, text]);
  clients.push(p);
  const line = await p.waitForLine(/waiting for approval of write_file/, 30_000);
  const id = /\((ap-[0-9a-f]{10}),/.exec(line)?.[1];
  expect(id).toBeDefined();
  await p.waitForLine(new RegExp(`approve: picoclaw approve ${id}`), 5_000);
  return { submit: p, id: id! };
}

async function finished(p: RoleProcess) {
  const code = await p.exited(60_000);
  const events = p.stdout.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as SwarmEvent);
  return { code, events, answer: events.find((e) => e.kind === "answer") as (SwarmEvent & { answer?: string }) | undefined };
}

const cli = (swarm: Swarm, args: string[]) => runRole("picoclaw.ts", [...args, ...swarm.common], { timeoutMs: 30_000 });

test("a call that needs approval parks its sub-task; approve lets it run, the loop goes on; a second decision is refused with the first", async () => {
  const workspace = join(tempHome(), "ws");
  writesOnce("<approve>", "notes.md", "v1.2 notes");
  const port = await freePort();
  const swarm = await suite.start("apr1", [
    { script: "coordinator.ts", args: ["--swarm.http.listen", `127.0.0.1:${port}`], env: ECHO_ENV },
    // ack_wait 2s: were the parked message kept, it would be redelivered (and used up) many times over.
    {
      script: "worker.ts",
      args: ["--agents.defaults.workspace", workspace, "--swarm.tasks.ack_wait", "2s", ...APPROVE_WRITES],
      env: suite.llmEnv(),
    },
  ]);
  const { submit, id } = await submitUntilPending(swarm, "<approve> write the notes");
  const worker = swarm.nodes[1]!;
  await worker.waitForLine(new RegExp(`Sub-task parked: a tool call waits for approval .*${id}:write_file`), 10_000);
  expect(existsSync(join(workspace, "notes.md"))).toBe(false);

  // Listed, with the model's reason, by `approvals --json`.
  const listed = await cli(swarm, ["approvals", "--json"]);
  expect(listed.code).toBe(0);
  const rows = listed.stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l));
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({ id, node: swarm.ids[1], tool: "write_file", reason: "I will write the release notes." });
  expect(JSON.parse(rows[0].arguments)).toEqual({ path: "notes.md", content: "v1.2 notes" });
  expect(rows[0].request).toMatch(/^r-/);

  // Parked, the sub-task's message is acked (the stream keeps none), so no ack wait can bring it back
  // and no delivery is spent while a person thinks.
  const nc = await connect({ servers: suite.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    await waitFor("TASKS to hold no message", async () => (await jsm.streams.info("PICOCLAW_apr1_TASKS")).state.messages === 0);
  } finally {
    await nc.close();
  }
  expect(worker.countLines(/Task assigned/)).toBe(1);
  const plain = await cli(swarm, ["approvals"]);
  expect(plain.stdout).toContain(`${id}  ${rows[0].request}/`);

  const ok = await cli(swarm, ["approve", id, "--note", "release is go"]);
  expect(ok.code).toBe(0);
  expect(ok.stdout).toContain(`approved ${id}: write_file "notes.md"`);

  const r = await finished(submit);
  expect(r.code).toBe(0);
  expect(r.answer!.answer!).toContain("tool said: wrote 10 bytes to notes.md");
  expect(readFileSync(join(workspace, "notes.md"), "utf8")).toBe("v1.2 notes");
  // The answer's list of tool calls says who approved the call.
  expect(r.answer!.answer!).toMatch(new RegExp(`write_file "notes.md" \\(\\d+ms, ok, approved by \\S+ \\(${id}\\)\\)`));
  // The audit trail: the decision in the request's events, who and what.
  const decision = r.events.find((e) => e.kind === "decision") as SwarmEvent & { decision?: Record<string, string> };
  expect(decision?.decision).toMatchObject({ id, outcome: "approved", tool: "write_file", note: "release is go" });
  expect(submit.output()).toContain(`${id}: approved by `);

  // A second decision, from any surface, is refused with the first one's outcome and who made it.
  const late = await cli(swarm, ["deny", id, "--reason", "too late"]);
  expect(late.code).toBe(1);
  expect(late.output).toMatch(new RegExp(`refused: ${id} was already approved by \\S+ at .*\\(release is go\\)`));
  expect((await cli(swarm, ["approvals", "--json"])).stdout.trim()).toBe("");

  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  expect(metrics).toContain('picoclaw_approvals_total{outcome="approved"} 1');
  expect(metrics).toMatch(/picoclaw_approval_wait_seconds_count 1/);
  expect(metrics).toMatch(/picoclaw_approvals_pending 0/);
});

test("denied: the model gets `denied: <reason>` as the call's result and goes on; nothing is written", async () => {
  const workspace = join(tempHome(), "ws");
  writesOnce("<deny>", "prod.conf", "dangerous");
  const swarm = await suite.start("apr2", [
    { script: "coordinator.ts", env: ECHO_ENV },
    { script: "worker.ts", args: ["--agents.defaults.workspace", workspace, ...APPROVE_WRITES], env: suite.llmEnv() },
  ]);
  const { submit, id } = await submitUntilPending(swarm, "<deny> change prod");
  const no = await cli(swarm, ["deny", id, "--reason", "not on a Friday"]);
  expect(no.code).toBe(0);
  const r = await finished(submit);
  expect(r.code).toBe(0);
  expect(r.answer!.answer!).toContain("tool said: denied: not on a Friday");
  expect(r.answer!.answer!).toMatch(new RegExp(`write_file "prod.conf" \\(0ms, denied, denied by \\S+ \\(${id}\\)\\)`));
  expect(existsSync(join(workspace, "prod.conf"))).toBe(false);
});

test("a decision covers the arguments shown: a pending record rewritten to show other arguments cannot get the real call approved", async () => {
  const workspace = join(tempHome(), "ws");
  writesOnce("<tamper>", "real.txt", "the real content");
  const swarm = await suite.start("apr6", [
    { script: "coordinator.ts", env: ECHO_ENV },
    { script: "worker.ts", args: ["--agents.defaults.workspace", workspace, ...APPROVE_WRITES], env: suite.llmEnv() },
  ]);
  const { submit, id } = await submitUntilPending(swarm, "<tamper> write");
  // Someone with write access to approval.* shows the approver a harmless call instead.
  const nc = await connect({ servers: suite.nats.url });
  try {
    const kv = await nc.jetstream().views.kv("picoclaw_apr6_tasks", { bindOnly: true });
    const entry = (await kv.get(`approval.${id}`))!;
    const shown = { ...entry.json<Record<string, unknown>>(), arguments: JSON.stringify({ path: "harmless.txt", content: "hi" }) };
    await kv.put(`approval.${id}`, JSON.stringify(shown));
  } finally {
    await nc.close();
  }
  const listed = await cli(swarm, ["approvals"]);
  expect(listed.stdout).toContain('arguments: {"path":"harmless.txt","content":"hi"}');
  expect((await cli(swarm, ["approve", id])).code).toBe(0);
  const r = await finished(submit);
  expect(r.code).toBe(0);
  expect(r.answer!.answer!).toContain("denied: the arguments that were approved are not this call's");
  expect(existsSync(join(workspace, "real.txt"))).toBe(false);
});

test("nobody decides within tools.approval.timeout: the call is denied as timed out, and a late approve is refused", async () => {
  writesOnce("<slow>", "late.txt", "x");
  const port = await freePort();
  const swarm = await suite.start("apr3", [
    { script: "coordinator.ts", args: ["--swarm.http.listen", `127.0.0.1:${port}`], env: ECHO_ENV },
    { script: "worker.ts", args: [...APPROVE_WRITES, "--tools.approval.timeout", "2s"], env: suite.llmEnv() },
  ]);
  const { submit, id } = await submitUntilPending(swarm, "<slow> write it");
  const r = await finished(submit);
  expect(r.code).toBe(0);
  expect(r.answer!.answer!).toContain("denied: approval timed out: nobody approved or denied it within 2s (tools.approval.timeout)");
  const late = await cli(swarm, ["approve", id]);
  expect(late.code).toBe(1);
  expect(late.output).toMatch(/can no longer be decided: .*(timed out|has ended)/);
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  expect(metrics).toContain('picoclaw_approvals_total{outcome="timed_out"} 1');
});

test("a request that ends while its call waits withdraws the call: approvals no longer lists it, approve refuses it", async () => {
  writesOnce("<ends>", "never.txt", "x");
  const swarm = await suite.start("apr5", [
    { script: "coordinator.ts", env: ECHO_ENV },
    { script: "worker.ts", args: APPROVE_WRITES, env: suite.llmEnv() },
  ]);
  const p = spawnRole("picoclaw.ts", [
    "submit",
    "--json",
    "--capabilities",
    "general",
    "--timeout",
    "4s",
    ...swarm.common,
    "<ends> write it",
  ]);
  clients.push(p);
  const id = /\((ap-[0-9a-f]{10}),/.exec(await p.waitForLine(/waiting for approval of write_file/, 30_000))![1]!;
  expect((await cli(swarm, ["approvals", "--json"])).stdout).toContain(id);
  const r = await finished(p);
  expect(r.answer!.answer!).toContain("deadline");
  await waitFor(
    "the withdrawn call to leave the list",
    async () => !(await cli(swarm, ["approvals", "--json"])).stdout.includes(id),
    15_000,
    200,
  );
  const late = await cli(swarm, ["approve", id]);
  expect(late.code).toBe(1);
  expect(late.output).toMatch(new RegExp(`${id} can no longer be decided: its request r-[0-9a-f]+ has ended, which withdrew the call`));
});

test("a pending call survives its worker dying, the coordinator failing over and a NATS restart; approve then lets the request finish on another worker", async () => {
  const ws2 = join(tempHome(), "ws2");
  writesOnce("<durable>", "kept.txt", "still here");
  const lease = ["--swarm.lease_ttl", "2s"];
  const swarm = await suite.start("apr4", [
    { script: "coordinator.ts", args: lease, env: ECHO_ENV },
    { script: "coordinator.ts", args: lease, env: ECHO_ENV },
    { script: "worker.ts", args: APPROVE_WRITES, env: suite.llmEnv() },
  ]);
  const [c1, c2, w1] = swarm.nodes as [RoleProcess, RoleProcess, RoleProcess];
  const { submit, id } = await submitUntilPending(swarm, "<durable> keep a file");
  // The worker that asked dies; so does the leading coordinator; then NATS restarts.
  w1.proc.kill("SIGKILL");
  const leader = c1.lines.some((l) => l.includes("Request planned")) ? c1 : c2;
  const standby = leader === c1 ? c2 : c1;
  leader.proc.kill("SIGKILL");
  await suite.nats.restart({ downMs: 1_000 });
  await standby.waitForLine(/Request resumed/, 30_000);
  await standby.waitForLine(new RegExp(`Task parked: waiting for approval .*${id}`), 30_000);
  // Approved while no worker with the tool is online: it waits for one.
  const ok = await cli(swarm, ["approve", id]);
  expect(ok.code).toBe(0);
  await standby.waitForLine(/Decided call waits for a node with its tools/, 15_000);
  const w2 = spawnRole("worker.ts", [...swarm.common, ...APPROVE_WRITES, "--agents.defaults.workspace", ws2], { env: suite.llmEnv() });
  clients.push(w2);
  const r = await finished(submit);
  expect(r.code).toBe(0);
  expect(r.answer!.answer!).toContain("tool said: wrote 10 bytes to kept.txt");
  expect(readFileSync(join(ws2, "kept.txt"), "utf8")).toBe("still here");
});
