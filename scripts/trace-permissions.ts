#!/usr/bin/env bun
// What each role actually does on the wire, for docs/nats-server.conf: runs a swarm of every role (two
// coordinators, a worker, a specialist, signing on) against a nats-server with `trace: true` and no
// permissions, walks it through what users do (submit, a pinned sub-task, a sub-task that keeps failing,
// watch, dashboard --json, ping, drain, shutdown, coordinator failover with resume,
// --swarm.check-nats), then prints, per client connection name, every subject it published to and
// subscribed to, with ids replaced by what they are. Also: an answer too large for one message (object
// store) and `picoclaw requests --failed`. Run by hand: `bun scripts/trace-permissions.ts`.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startLlmServer } from "../test/helpers/llm-server.ts";
import { startNatsServer } from "../test/helpers/nats-server.ts";
import { FAST, type RoleProcess, runRole, spawnRole, tempHome } from "../test/helpers/role-process.ts";
import { planFile, selfId } from "../test/helpers/swarm.ts";

const HID = "alpha";
const dir = tempHome();
const log = join(dir, "trace.log");
const nats = await startNatsServer({ config: `trace: true\nlogtime: false\nlog_file: "${log}"\nmax_payload: 1048576\n` });
const llm = await startLlmServer();
const procs: RoleProcess[] = [];

const keys: Record<string, { file: string; pub: string }> = {};
for (const name of ["coord", "worker", "admin"]) {
  const file = join(dir, `${name}.nk`);
  const r = await runRole("picoclaw.ts", ["keygen", file]);
  keys[name] = { file, pub: /public key: (U[A-Z2-7]{55})/.exec(r.stdout)![1]! };
}
const common = ["--swarm.nats.urls", nats.url, "--swarm.hid", HID, ...FAST];
const sec = (key: string) => [
  "--swarm.security.signing",
  "--swarm.security.key_file",
  keys[key]!.file,
  "--swarm.security.trusted_coordinators",
  keys.coord!.pub,
  "--swarm.security.trusted_workers",
  keys.worker!.pub,
  "--swarm.security.trusted_admins",
  keys.admin!.pub,
];
const env = { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "m" };
/** Room for an answer too large for one message (it goes to the answers object store). */
const BIG = ["--swarm.tasks.max_prompt_bytes", "524288", "--swarm.tasks.max_result_bytes", "524288"];
const start = (script: string, key: string, extra: string[] = []) => {
  const p = spawnRole(script, [...common, ...sec(key), ...BIG, "--swarm.tasks.max_deliver", "2", ...extra], { env });
  procs.push(p);
  return p;
};
const client = (args: string[], key = "admin", stdin?: string) =>
  runRole("picoclaw.ts", [...args, ...common, ...sec(key), ...BIG], { env, timeoutMs: 60_000, stdin });

try {
  const c1 = start("coordinator.ts", "coord");
  await c1.waitForLine(/Node joined swarm .*self=true/, 20_000);
  const c2 = start("coordinator.ts", "coord");
  const w = start("worker.ts", "worker");
  const s = start("specialist.ts", "worker", ["--swarm.capabilities", "rust"]);
  for (const p of [c2, w, s]) await p.waitForLine(/Node joined swarm .*self=true/, 20_000);
  const worker = selfId(w);
  const specialist = selfId(s);

  console.error("trace: submit, pinned sub-task, failing sub-task");
  const answered = await client(["submit", "--json", "--capabilities", "general,rust", "trace one"], "worker");
  const request = /"request":"(r-[^"]+)"/.exec(answered.stdout)?.[1];
  await client(["submit", "--plan", planFile(`tasks:\n  - { id: a, capability: general, node: ${worker}, prompt: pinned }\n`)], "worker");
  await client(
    ["submit", "--plan", planFile("tasks:\n  - { id: a, capability: general, prompt: '[[status=503]] always fails' }\n")],
    "worker",
  );

  console.error("trace: an answer too large for one message, and its watch");
  const big = await client(["submit", "--json", "--capabilities", "general", "-"], "worker", `[[reply=${"x".repeat(300_000)}]] big`);
  const bigRequest = /"request":"(r-[^"]+)"/.exec(big.stdout)?.[1];
  if (bigRequest) await client(["watch", bigRequest], "worker");

  console.error("trace: watch, dashboard, ping, check-nats, requests --failed");
  await client(["requests", "--failed"]);
  if (request) await client(["watch", request], "worker");
  await runRole("dashboard.ts", ["--json", ...common], { env });
  await client(["ping", worker]);
  await runRole("worker.ts", ["--swarm.check-nats", ...common], { env });

  console.error("trace: failover with resume (the leader is killed while a sub-task runs)");
  const leader = [c1, c2].find((p) => p.lines.some((l) => /Coordinator leading/.test(l))) ?? c1;
  const slow = client(["submit", "--capabilities", "general", "[[delay=3000]] slow one"], "worker");
  await w.waitForLine(/Task assigned .*attempt=1/, 20_000).catch(() => {});
  leader.proc.kill("SIGKILL");
  await slow;

  console.error("trace: drain and shutdown");
  await client(["drain", specialist]);
  await client(["shutdown", worker]);
  for (const p of procs) if (p.proc.exitCode === null) p.signal("SIGTERM");
  await Promise.all(procs.map((p) => p.exited(20_000).catch(() => p.proc.kill("SIGKILL"))));
} finally {
  for (const p of procs) if (p.proc.exitCode === null) p.proc.kill("SIGKILL");
  await llm.stop();
}
await Bun.sleep(500); // the server's last trace lines reach its log file
const text = readFileSync(log, "utf8");
await nats.stop();

/** Ids replaced by what they are, so one line stands for every request, node, inbox and nonce. */
function normalize(subject: string): string {
  return subject
    .replace(new RegExp(`^_INBOX_${HID}\\..*`), `_INBOX_${HID}.>`)
    .replace(/^_INBOX\..*/, "_INBOX.>")
    .replace(/claw-[0-9a-f]{8}/g, "<node>")
    .replace(/r-[0-9a-z]{6,}/g, "<request>")
    .replace(/\.nonce\.[0-9a-f]{24}/, ".nonce.<nonce>")
    .replace(/^(\$JS\.ACK\.[^.]+\.[^.]+)\..*/, "$1.>")
    .replace(/^(\$JS\.API\.CONSUMER\.(?:INFO|DELETE|MSG\.NEXT)\.PICOCLAW_[^.]+_EVENTS)\.[A-Za-z0-9]+$/, "$1.<ordered>")
    .replace(/^(\$JS\.API\.CONSUMER\.CREATE\.PICOCLAW_[^.]+_EVENTS)\.[A-Za-z0-9]+\./, "$1.<ordered>.");
}
const seen = new Map<string, Set<string>>();
for (const line of text.split("\n")) {
  const m = /cid:\d+ - "[^"]*:([^":]+)" - <<- \[(PUB|HPUB|SUB) (\S+)/.exec(line);
  if (!m) continue;
  const [, name, op, subject] = m as unknown as [string, string, string, string];
  const key = `${name}`;
  if (!seen.has(key)) seen.set(key, new Set());
  seen.get(key)!.add(`${op === "SUB" ? "sub" : "pub"} ${normalize(subject)}`);
}
for (const [name, subjects] of [...seen].sort()) {
  console.log(`\n== ${name}`);
  for (const s of [...subjects].sort()) console.log(`  ${s}`);
}
