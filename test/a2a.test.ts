// The gateway as an A2A agent, driven by the official @a2a-js/sdk client: the agent card, a message
// answered as a completed task, a tool call that waits for a person as the task's input-required state
// answered by a message on the same task, and the 0.3 JSON-RPC names (message/send, message/stream,
// tasks/get, tasks/cancel) through the SDK's compat transport. Real nats-server, real role processes,
// a real OpenAI-style LLM server.
import { afterEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Message, Role, type Task, TaskState } from "@a2a-js/sdk";
import { ClientFactory } from "@a2a-js/sdk/client";
import { LegacyJsonRpcTransport } from "@a2a-js/sdk/compat/v0_3/client";
import type { ChatRequestBody } from "./helpers/llm-server.ts";
import { type RoleProcess, reaper, spawnRole, tempHome } from "./helpers/role-process.ts";
import { ECHO_ENV, swarmSuite } from "./helpers/suite.ts";
import type { Swarm } from "./helpers/swarm.ts";
import { waitFor } from "./helpers/wait.ts";

const suite = swarmSuite();
const procs = reaper();
afterEach(async () => {
  suite.llm.script(undefined);
  await procs.killAll();
});

const userText = (b: ChatRequestBody) => String((b.messages ?? []).find((m) => m.role === "user")?.content ?? "");

/** The model writes `<file>.txt` once (approval required), then answers with what the tool said. */
function writesOnce(marker: string) {
  suite.llm.script((b) => {
    const file = new RegExp(`${marker} (\\w+)`).exec(userText(b))?.[1];
    if (!file) return undefined;
    const seen = (b.messages ?? []).filter((m) => m.role === "tool");
    if (seen.length === 0)
      return { tool_calls: [{ name: "write_file", arguments: JSON.stringify({ path: `${file}.txt`, content: file }) }] };
    return `tool said: ${seen[0]!.content}`;
  });
}

async function startGateway(
  swarm: Swarm,
  args: string[] = ["--swarm.gateway.a2a_decisions"],
): Promise<{ proc: RoleProcess; root: string }> {
  const proc = procs.track(spawnRole("picoclaw.ts", ["gateway", "--swarm.http.listen", "127.0.0.1:0", ...swarm.common, ...args]));
  const base = /url=(\S+)/.exec(await proc.waitForLine(/Gateway ready url=\S+/, 15_000))![1]!;
  const root = base.replace(/\/v1$/, "");
  await waitFor("the gateway's /readyz", async () => (await fetch(`${root}/readyz`)).status === 200);
  return { proc, root };
}

const message = (text: string, taskId = ""): Message => ({
  messageId: randomUUID(),
  role: Role.ROLE_USER,
  parts: [{ content: { $case: "text", value: text }, metadata: undefined, filename: "", mediaType: "text/plain" }],
  taskId,
  contextId: "",
  extensions: [],
  metadata: undefined,
  referenceTaskIds: [],
});
const send = (text: string, taskId?: string) => ({
  tenant: "",
  message: message(text, taskId),
  configuration: undefined,
  metadata: undefined,
});
const statusText = (t: Task) => t.status?.message?.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("") ?? "";
const answerText = (t: Task) =>
  t.artifacts.flatMap((a) => a.parts.map((p) => (p.content?.$case === "text" ? p.content.value : ""))).join("");

test("A2A 1.0 with the official client: the agent card, an answered task, and a call waiting for approval as input-required on the same task", async () => {
  const workspace = join(tempHome(), "ws");
  writesOnce("<a2a>");
  const swarm = await suite.start("a2a1", [
    { script: "coordinator.ts", env: ECHO_ENV },
    {
      script: "worker.ts",
      args: ["--tools.approval.required", "write_file", "--agents.defaults.workspace", workspace],
      env: suite.llmEnv(),
    },
  ]);
  const gw = await startGateway(swarm);
  const client = await new ClientFactory().createFromUrl(gw.root);
  const card = await client.getAgentCard();
  expect(card.name).toBe("PicoClaw Swarm a2a1");
  expect(card.capabilities?.streaming).toBe(true);
  expect(card.supportedInterfaces.map((i) => `${i.protocolBinding} ${i.protocolVersion}`).sort()).toEqual(["JSONRPC 0.3", "JSONRPC 1.0"]);

  // A plain question: the task completes with the swarm's answer as its artifact.
  const plain = (await client.sendMessage(send("a2a plain question"))) as Task;
  expect(plain.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  expect(answerText(plain)).toContain("a2a plain question");
  expect(plain.metadata?.request).toMatch(/^r-[0-9a-f]{10}$/);

  // A tool call that needs approval: input-required, with the call and how to answer.
  const events = [];
  for await (const ev of client.sendMessageStream(send("<a2a> notes"))) events.push(ev);
  const last = events.at(-1)!;
  const waiting = last.payload?.$case === "statusUpdate" ? last.payload.value : undefined;
  expect(waiting?.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
  const words = waiting!.status!.message!.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("");
  expect(words).toMatch(/Waiting for approval:\nap-[0-9a-f]{10}: write_file \{"path":"notes.txt","content":"notes"\} on claw-/);
  const apId = /(ap-[0-9a-f]{10})/.exec(words)![1]!;
  expect(words).toContain('Answer "approve" or "deny: <reason>"');
  const taskId = waiting!.taskId;
  expect(existsSync(join(workspace, "notes.txt"))).toBe(false);
  expect((await client.getTask({ tenant: "", id: taskId })).status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);

  // Something that is no answer (even "ok"): asked again. A gateway without a2a_decisions decides nothing.
  const unclear = (await client.sendMessage(send("ok, maybe later", taskId))) as Task;
  expect(unclear.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
  const strictGw = await startGateway(swarm, []);
  const strict = await new ClientFactory().createFromUrl(strictGw.root);
  let strictTask = "";
  let strictWords = "";
  for await (const ev of strict.sendMessageStream(send("<a2a> other"))) {
    if (ev.payload?.$case === "statusUpdate") {
      strictTask = ev.payload.value.taskId;
      strictWords = ev.payload.value.status?.message?.parts.map((p) => (p.content?.$case === "text" ? p.content.value : "")).join("") ?? "";
    }
  }
  expect(strictWords).toContain("swarm.gateway.a2a_decisions is off");
  const refused = (await strict.sendMessage(send("approve", strictTask))) as Task;
  expect(refused.status?.state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
  expect(existsSync(join(workspace, "other.txt"))).toBe(false);
  // Then "approve" on the first task, on the gateway that takes decisions: it runs, and completes.
  const done = (await client.sendMessage(send("approve, looks right", taskId))) as Task;
  expect(done.id).toBe(taskId);
  expect(done.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  expect(answerText(done)).toContain("tool said: wrote 5 bytes to notes.txt");
  expect(answerText(done)).toMatch(new RegExp(`approved by a2a via gateway claw-\\S+ \\(${apId}\\)`));
  expect(readFileSync(join(workspace, "notes.txt"), "utf8")).toBe("notes");
  expect((await client.getTask({ tenant: "", id: taskId })).status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
});

test("A2A 0.3 JSON-RPC names through the SDK's compat transport: message/send, message/stream with a denial, tasks/get, tasks/cancel", async () => {
  writesOnce("<a2a-old>");
  const swarm = await suite.start("a2a2", [
    { script: "coordinator.ts", env: ECHO_ENV },
    { script: "worker.ts", args: ["--tools.approval.required", "write_file"], env: suite.llmEnv() },
  ]);
  const gw = await startGateway(swarm);
  const old = new LegacyJsonRpcTransport({ endpoint: `${gw.root}/a2a` });
  expect(old.protocolVersion).toBe("0.3");

  const answered = (await old.sendMessage(send("old client asks"))) as Task;
  expect(answered.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  expect(answerText(answered)).toContain("old client asks");
  expect((await old.getTask({ tenant: "", id: answered.id })).status?.state).toBe(TaskState.TASK_STATE_COMPLETED);

  // message/stream to input-required, then a denial on the same task: the model is told, and answers.
  let taskId = "";
  let state: TaskState | undefined;
  for await (const ev of old.sendMessageStream(send("<a2a-old> risky"))) {
    if (ev.payload?.$case === "task") taskId = ev.payload.value.id;
    if (ev.payload?.$case === "statusUpdate") state = ev.payload.value.status?.state;
  }
  expect(state).toBe(TaskState.TASK_STATE_INPUT_REQUIRED);
  const denied = (await old.sendMessage(send("deny: not today", taskId))) as Task;
  expect(denied.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
  expect(answerText(denied)).toContain("tool said: denied: not today");

  // tasks/cancel of a task still running: canceled (its swarm request goes on to its own end).
  const slow = (await old.sendMessage({
    ...send("old slow one [[delay=20000]]"),
    configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately: true },
  })) as Task;
  const canceled = await old.cancelTask({ tenant: "", id: slow.id, metadata: undefined });
  expect(canceled.status?.state).toBe(TaskState.TASK_STATE_CANCELED);
  expect(statusText(canceled)).toBe("");
  expect((await old.getTask({ tenant: "", id: slow.id })).status?.state).toBe(TaskState.TASK_STATE_CANCELED);
});
