// docs/deploy.md's multi-machine and systemd sections, run for real on this machine:
// - docs/nats-cluster.conf as three nats-servers (only ports, listen addresses and the store moved,
//   routes to 127.0.0.1 instead of machine1..3), with the token and server names from the environment;
// - two coordinators and three workers from docs/picoclaw-worker.env (URLs of all three servers,
//   replicas 3), all started at the same instant on the fresh cluster, as machines booting together
//   do: every one joins (none exits on JetStream electing leaders or on a bucket another node is
//   creating), the guide's review is answered, the streams are replicated on all three servers;
// - docs/picoclaw@.service: `systemd-analyze verify` accepts it, and the process it starts, with the
//   environment file as systemd reads it, leaves the swarm and exits 0 on its KillSignal well within
//   TimeoutStopSec.
// And the commands of README.md, the rest of docs/deploy.md and docs/security.md's signing walkthrough,
// as written (each found in the page's ```bash blocks, so a changed page fails here): the embedded
// two-terminal start with submit, watch, both dashboards and a gateway call; `npm run demo`; one machine;
// several machines on one nats-server; the code-review example (echo, then specialists with tools on a
// git repository); troubleshooting; keygen, four config files and the signed swarm they make.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { connect } from "nats";
import { parseDuration } from "../lib/duration.ts";
import { freePort, portOpen } from "../lib/embedded-nats.ts";
import { type ChatRequestBody, type LlmServer, startLlmServer } from "./helpers/llm-server.ts";
import { type NatsServer, startNatsServer } from "./helpers/nats-server.ts";
import { ROOT, type RoleProcess, reaper, runRole, spawnRole, tempHome } from "./helpers/role-process.ts";
import { waitFor } from "./helpers/wait.ts";

const CONF = readFileSync(join(ROOT, "docs/nats-cluster.conf"), "utf8");
const UNIT = readFileSync(join(ROOT, "docs/picoclaw@.service"), "utf8");
const TOKEN = "deploy-docs-test-token";
const REVIEW = "Review this change: the HTTP client now retries failed requests";

/** KEY=VALUE lines as systemd's EnvironmentFile reads them (comments and blank lines skipped). */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#") || t.startsWith(";")) continue;
    const eq = t.indexOf("=");
    env[t.slice(0, eq).trim()] = t.slice(eq + 1).trim();
  }
  return env;
}
const WORKER_ENV = envFile(readFileSync(join(ROOT, "docs/picoclaw-worker.env"), "utf8"));

/** `Key=value` of the unit's sections (last one wins, as in systemd). */
function unitSetting(key: string): string {
  const m = [...UNIT.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].at(-1);
  if (!m) throw new Error(`docs/picoclaw@.service has no ${key}=`);
  return m[1]!.trim();
}

interface Server {
  name: string;
  client: number;
  cluster: number;
  monitor: number;
  dir: string;
  proc?: Subprocess;
}
const servers: Server[] = [];
let urls = "";

/** docs/nats-cluster.conf for server i on this machine; every change must apply, or the file changed shape. */
function localConf(i: number): string {
  const s = servers[i]!;
  let text = CONF;
  const swap = (from: string | RegExp, to: string) => {
    const next = text.replace(from, to);
    if (next === text) throw new Error(`docs/nats-cluster.conf no longer has ${from}: update this test`);
    text = next;
  };
  swap(/^port: 4222$/m, `host: 127.0.0.1\nport: ${s.client}`);
  swap(/^http_port: 8222$/m, `http: "127.0.0.1:${s.monitor}"`);
  swap('store_dir: "/var/lib/nats/jetstream"', `store_dir: "${s.dir}/jetstream"`);
  swap(/^ {2}port: 6222$/m, `  host: 127.0.0.1\n  port: ${s.cluster}`);
  servers.forEach((peer, j) => {
    swap(`nats-route://machine${j + 1}:6222`, `nats-route://127.0.0.1:${peer.cluster}`);
  });
  return text;
}

function logTail(s: Server): string {
  return readFileSync(join(s.dir, "nats-server.log"), "utf8").split("\n").slice(-25).join("\n");
}

async function healthz(s: Server): Promise<number> {
  if (s.proc?.exitCode !== null) throw new Error(`${s.name} exited:\n${readFileSync(join(s.dir, "nats-server.log"), "utf8")}`);
  return (await fetch(`http://127.0.0.1:${s.monitor}/healthz`).catch(() => undefined))?.status ?? 0;
}

/** The worker env file as a node on "machine N" reads it, pointed at the local servers. */
function nodeEnv(over: Record<string, string>): Record<string, string> {
  const env = { ...WORKER_ENV, ...over };
  expect(env.PICOCLAW_SWARM_NATS_URLS).toBe("nats://machine1:4222,nats://machine2:4222,nats://machine3:4222");
  env.PICOCLAW_SWARM_NATS_URLS = urls;
  env.PICOCLAW_SWARM_NATS_TOKEN = TOKEN;
  return env;
}

const procs = reaper();
let llm: LlmServer;

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    servers.push({
      name: `machine${i + 1}`,
      client: await freePort(),
      cluster: await freePort(),
      monitor: await freePort(),
      dir: mkdtempSync(join(tmpdir(), `picoclaw-deploy-nats-${i}-`)),
    });
  }
  urls = servers.map((s) => `nats://127.0.0.1:${s.client}`).join(",");
  for (const [i, s] of servers.entries()) {
    const conf = join(s.dir, "nats-cluster.conf");
    writeFileSync(conf, localConf(i));
    s.proc = Bun.spawn(["nats-server", "-c", conf], {
      env: { ...process.env, NATS_SERVER_NAME: s.name, NATS_TOKEN: TOKEN },
      stdout: "ignore",
      stderr: Bun.file(join(s.dir, "nats-server.log")),
    });
  }
  llm = await startLlmServer();
});

afterAll(async () => {
  await procs.killAll();
  await llm?.stop();
  for (const s of servers) s.proc?.kill("SIGTERM");
  await Promise.all(servers.map((s) => Promise.race([s.proc?.exited, Bun.sleep(5_000)])));
  for (const s of servers) {
    if (s.proc?.exitCode === null) s.proc.kill("SIGKILL");
    rmSync(s.dir, { recursive: true, force: true });
  }
});

describe("docs/deploy.md, multi-machine: docs/nats-cluster.conf as three servers", () => {
  test("each server is healthy (JetStream cluster formed) and routes to both others; clients need the token", async () => {
    for (const s of servers) {
      // Bounded generously: on a loaded 2-core machine the three servers take a while to elect a leader.
      await waitFor(`${s.name} /healthz`, async () => (await healthz(s)) === 200, 60_000, 100).catch((err: Error) => {
        throw new Error(`${err.message}\n${servers.map((x) => `--- ${x.name} log (end) ---\n${logTail(x)}`).join("\n")}`);
      });
      // Healthy with a quorum, a server may still be connecting its route to the third: wait for both.
      const peers = async () => {
        const routez = (await (await fetch(`http://127.0.0.1:${s.monitor}/routez`)).json()) as { routes?: { remote_id: string }[] };
        return new Set((routez.routes ?? []).map((r) => r.remote_id)).size;
      };
      await waitFor(`${s.name} routes to both other servers`, async () => (await peers()) === 2, 30_000, 100).catch(() => {});
      expect({ server: s.name, peers: await peers() }).toEqual({ server: s.name, peers: 2 });
    }
    const refused = await connect({ servers: urls.split(","), reconnect: false }).then(
      (nc) => nc.close().then(() => "connected"),
      (err: Error) => err.message,
    );
    expect(refused).toMatch(/Authorization Violation/i);
  }, 90_000);

  test("two coordinators and three workers from docs/picoclaw-worker.env, started at the same instant: all join, the review is answered, streams R3", async () => {
    const nodes: RoleProcess[] = [];
    const llmEnv = { PICOCLAW_LLM_BASE_URL: llm.url, PICOCLAW_LLM_MODEL: "test-model" };
    for (let i = 0; i < 5; i++) {
      const role = i < 2 ? { PICOCLAW_SWARM_ROLE: "coordinator", PICOCLAW_SWARM_CAPABILITIES: "coordination" } : llmEnv;
      const env = nodeEnv({
        ...role,
        PICOCLAW_SWARM_HTTP_LISTEN: `127.0.0.1:${await freePort()}`,
        PICOCLAW_SWARM_NODE_ID: `machine-node-${i}`,
      });
      nodes.push(spawnRole("picoclaw.ts", [], { env, home: tempHome() }));
    }
    for (const n of nodes) procs.track(n);
    // Every node sees the four others join; none exits meanwhile (a start-up failure would end the process).
    for (const [i, n] of nodes.entries()) {
      await waitFor(
        `machine-node-${i} to see the four others join`,
        () => {
          if (n.proc.exitCode !== null) throw new Error(`machine-node-${i} exited ${n.proc.exitCode}:\n${n.output()}`);
          return n.lines.filter((l) => /Node joined swarm node=machine-node-\d+ /.test(l) && !l.includes("self=true")).length >= 4;
        },
        60_000,
        100,
      );
    }
    expect(nodes.map((n) => n.proc.exitCode)).toEqual([null, null, null, null, null]);
    const retried = nodes.flatMap((n) => n.lines.filter((l) => l.includes("JetStream not ready yet")));
    console.log(`deploy-docs: ${retried.length} start-up steps tried again${retried.length ? `, e.g. ${retried[0]}` : ""}`);
    // One leads, one stands by.
    await waitFor("a leading coordinator", () => nodes.slice(0, 2).some((n) => n.countLines(/Coordinator leading/) > 0), 30_000);

    // docs/deploy.md's client: `picoclaw submit` with the same environment, from any machine.
    const r = await runRole("picoclaw.ts", ["submit", REVIEW], { env: nodeEnv({}), home: tempHome(), timeoutMs: 90_000 });
    expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
    expect(r.stdout).toContain("4 completed, 0 failed or skipped");
    expect(r.stdout).toContain("ok: "); // the workers' LLM answered

    const nc = await connect({ servers: urls.split(","), token: TOKEN });
    const streams = await (await nc.jetstreamManager()).streams.list().next();
    await nc.close();
    expect(streams.length).toBeGreaterThan(0);
    expect(streams.map((s) => [s.config.name, s.config.num_replicas]).filter(([, n]) => n !== 3)).toEqual([]);
  }, 180_000);
});

describe("docs/deploy.md, systemd: docs/picoclaw@.service", () => {
  const dist = join(ROOT, "dist", "picoclaw");
  beforeAll(async () => {
    // The unit runs the compiled all-in-one; build it when it is missing or older than the sources.
    const newest = Math.max(
      ...["lib", "roles", "roles/coordinator", "roles/worker", "roles/dashboard", "roles/picoclaw"].flatMap((d) =>
        readdirSync(join(ROOT, d))
          .filter((f) => f.endsWith(".ts"))
          .map((f) => statSync(join(ROOT, d, f)).mtimeMs),
      ),
    );
    const built = (() => {
      try {
        return statSync(dist).mtimeMs;
      } catch {
        return 0;
      }
    })();
    if (built < newest) {
      const b = Bun.spawnSync(["bun", "run", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
      if (b.exitCode !== 0) throw new Error(`bun run build failed:\n${b.stderr.toString()}`);
    }
  }, 120_000);

  test("systemd-analyze verify accepts the unit (ExecStart pointed at this build)", () => {
    const analyze = Bun.which("systemd-analyze");
    if (!analyze) throw new Error("systemd-analyze is missing (apt-get install systemd)");
    const dir = mkdtempSync(join(tmpdir(), "picoclaw-unit-"));
    const unit = join(dir, "picoclaw@worker.service");
    writeFileSync(unit, UNIT.replace(/^ExecStart=\/usr\/local\/bin\/picoclaw$/m, `ExecStart=${dist}`));
    const r = Bun.spawnSync([analyze, "verify", unit], { stdout: "pipe", stderr: "pipe" });
    rmSync(dir, { recursive: true, force: true });
    expect({ code: r.exitCode, said: `${r.stdout}${r.stderr}`.trim() }).toEqual({ code: 0, said: "" });
  });

  test("the process it starts, with the environment file, joins; its KillSignal makes it leave and exit 0 within TimeoutStopSec", async () => {
    expect(unitSetting("ExecStart")).toBe("/usr/local/bin/picoclaw");
    expect(unitSetting("EnvironmentFile")).toBe("/etc/picoclaw/%i.env");
    const signal = unitSetting("KillSignal") as "SIGTERM";
    const stopWithinMs = Number(/^(\d+)s$/.exec(unitSetting("TimeoutStopSec"))![1]) * 1_000;
    const env = nodeEnv({ PICOCLAW_SWARM_HTTP_LISTEN: `127.0.0.1:${await freePort()}`, HOME: tempHome() });
    // The default drain_grace must fit in the stop timeout (with room for the hand-back and the leave).
    const cfg = await runRole("picoclaw", ["config"], { env, binary: dist });
    const grace = /swarm\.drain_grace = "([^"]+)"/.exec(cfg.output)?.[1];
    expect(parseDuration(grace ?? "")).toBeLessThan(stopWithinMs - 5_000);

    const node = procs.track(spawnRole("picoclaw", [], { env, binary: dist }));
    await node.waitForLine(/Node joined swarm .*role=worker .*self=true/, 30_000);
    const t0 = Date.now();
    node.signal(signal);
    expect(await node.exited(stopWithinMs)).toBe(0);
    expect(Date.now() - t0).toBeLessThan(stopWithinMs);
    expect(node.output()).toMatch(/Node left swarm .*reason=graceful self=true/);
  }, 90_000);
});

// ---------------------------------------------------------------------------------------------------
// The documented commands, as written: each test names the line it runs, which must be a command of
// the page's ```bash blocks (so editing a page without this test fails here), and changes only what
// cannot be the same on a test machine (ports, paths, host names), each change checked to apply.

/** Everything from an unquoted `#` that starts a word to the end of the line. */
function stripComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]!))) return line.slice(0, i);
  }
  return line;
}

/** The commands of a page's ```bash blocks: `\` continuations joined, comments and a trailing `&` dropped. */
function docCommands(file: string): string[] {
  const out: string[] = [];
  for (const m of readFileSync(join(ROOT, file), "utf8").matchAll(/^```bash\n([\s\S]*?)^```$/gm)) {
    for (const line of m[1]!.replace(/\\\n\s*/g, "").split("\n")) {
      const cmd = stripComment(line).trim().replace(/\s*&$/, "");
      if (cmd) out.push(cmd);
    }
  }
  return out;
}

/** A command split into words as a shell does (quotes removed, no expansion); leading NAME=value words are its environment. */
function shellWords(cmd: string): { env: Record<string, string>; argv: string[] } {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (const c of cmd) {
    if (quote) {
      if (c === quote) quote = undefined;
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      word ??= "";
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else word = (word ?? "") + c;
  }
  if (quote) throw new Error(`unbalanced quote in: ${cmd}`);
  if (word !== undefined) words.push(word);
  const env: Record<string, string> = {};
  while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0]!)) {
    const w = words.shift()!;
    env[w.slice(0, w.indexOf("="))] = w.slice(w.indexOf("=") + 1);
  }
  return { env, argv: words };
}

/**
 * `cmd`, which must be one of the commands of `file` as written, with each [from, to] swapped in (each
 * `from` must occur: a test machine has other ports and paths), split into words.
 */
function documented(file: string, cmd: string, swaps: [string, string][] = []): { env: Record<string, string>; argv: string[] } {
  expect({ file, commands: docCommands(file) }).toEqual({ file, commands: expect.arrayContaining([cmd]) });
  let text = cmd;
  for (const [from, to] of swaps) {
    if (!text.includes(from)) throw new Error(`${file}: "${cmd}" no longer has ${from}: update this test`);
    text = text.split(from).join(to);
  }
  return shellWords(text);
}

/** The command after the last `|` of a documented pipeline (the test gives it what the left side would print). */
function afterPipe(cmd: { env: Record<string, string>; argv: string[] }): { env: Record<string, string>; argv: string[] } {
  const bar = cmd.argv.lastIndexOf("|");
  expect(bar).toBeGreaterThan(0);
  return { env: {}, argv: cmd.argv.slice(bar + 1) };
}

/** Runs a documented `picoclaw ...` command line as a process (bun roles/picoclaw.ts, as the alias does). */
function picoclaw(
  cmd: { env: Record<string, string>; argv: string[] },
  o: { env?: Record<string, string>; home?: string; stdin?: string } = {},
) {
  expect(cmd.argv[0]).toBe("picoclaw");
  return spawnRole("picoclaw.ts", cmd.argv.slice(1), { env: { ...o.env, ...cmd.env }, home: o.home, stdin: o.stdin });
}

/** The same, to completion (bounded). */
async function runPicoclaw(
  cmd: { env: Record<string, string>; argv: string[] },
  o: { env?: Record<string, string>; home?: string; stdin?: string; timeoutMs?: number } = {},
) {
  expect(cmd.argv[0]).toBe("picoclaw");
  return runRole("picoclaw.ts", cmd.argv.slice(1), {
    env: { ...o.env, ...cmd.env },
    home: o.home,
    stdin: o.stdin,
    timeoutMs: o.timeoutMs ?? 60_000,
  });
}

/** Runs a documented command that is not picoclaw (curl, git, npm) to completion. */
async function runCommand(argv: string[], o: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}) {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("PICOCLAW_")) env[k] = v;
  const proc = Bun.spawn(argv, { cwd: o.cwd ?? ROOT, env: { ...env, ...o.env }, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), o.timeoutMs ?? 60_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Stops nodes as Ctrl-C does and waits for each to exit 0. */
async function stopAll(nodes: RoleProcess[]): Promise<void> {
  for (const n of nodes) if (n.proc.exitCode === null) n.signal("SIGINT");
  const codes = await Promise.all(nodes.map((n) => n.exited(20_000)));
  expect(codes).toEqual(nodes.map(() => 0));
}

const joined = (n: RoleProcess) => n.waitForLine(/Node joined swarm .*self=true/, 30_000);
const nodeIdOf = async (n: RoleProcess) => (await joined(n)).match(/node=(claw-[0-9a-f]+)/)![1]!;
const requestIdOf = (output: string) => output.match(/submitted request (r-[0-9a-f]+)/)?.[1];

describe("README.md and docs/deploy.md, local: the embedded two-terminal start", () => {
  test("coordinator and workers on embedded NATS, submit, watch, requests, both dashboards, the gateway and curl; the last node out stops NATS", async () => {
    const port = await freePort();
    const home = tempHome();
    // The commands as written, on a free port instead of 4222; clients find the server at the default URL.
    const embedded = { PICOCLAW_SWARM_NATS_EMBEDDED_PORT: String(port) };
    const defaultUrl = { PICOCLAW_SWARM_NATS_URLS: `nats://localhost:${port}` };
    const nodes: RoleProcess[] = [];
    let natsPid: number | undefined;
    try {
      const coordinator = picoclaw(documented("README.md", "picoclaw --swarm.enabled --swarm.role coordinator --swarm.nats.embedded"), {
        env: embedded,
        home,
      });
      nodes.push(procs.track(coordinator));
      natsPid = Number((await coordinator.waitForLine(/Embedded NATS started/, 30_000)).match(/pid=(\d+)/)?.[1]);
      expect(docCommands("docs/deploy.md")).toContain("picoclaw --swarm.enabled --swarm.role coordinator --swarm.nats.embedded");
      const worker = picoclaw(documented("README.md", "picoclaw --swarm.enabled --swarm.role worker --swarm.nats.embedded"), {
        env: embedded,
        home,
      });
      const codeWorker = picoclaw(
        documented("docs/deploy.md", "picoclaw --swarm.enabled --swarm.role worker --swarm.capabilities code --swarm.nats.embedded"),
        { env: embedded, home },
      );
      nodes.push(procs.track(worker), procs.track(codeWorker));
      for (const n of nodes) await joined(n);
      await worker.waitForLine(/Embedded NATS already running, joining it/);

      const review = 'picoclaw submit --swarm.nats.embedded "Review this change: the HTTP client now retries failed requests"';
      expect(docCommands("docs/deploy.md")).toContain(review);
      const first = await runPicoclaw(documented("README.md", review), { env: embedded, home });
      expect({ code: first.code, output: first.code === 0 ? "" : first.output }).toEqual({ code: 0, output: "" });
      expect(first.stdout).toContain("4 completed, 0 failed or skipped");
      const request = requestIdOf(first.output)!;
      expect(request).toBeDefined();

      // README "Submit and watch": the default URL is where the embedded server listens.
      const text = await runPicoclaw(
        documented("README.md", 'picoclaw submit "Review this change: the HTTP client now retries failed requests"'),
        {
          env: defaultUrl,
          home,
        },
      );
      expect({ code: text.code, answered: text.stdout.includes("# Swarm answer") }).toEqual({ code: 0, answered: true });
      const diff = "diff --git a/retry.ts b/retry.ts\n-export const attempts = 3;\n+export const attempts = 5;\n";
      const piped = await runPicoclaw(afterPipe(documented("README.md", "git diff | picoclaw submit -")), {
        env: defaultUrl,
        home,
        stdin: diff,
      });
      expect({ code: piped.code, quoted: piped.stdout.includes("+export const attempts = 5;") }).toEqual({ code: 0, quoted: true });
      const json = await runPicoclaw(documented("README.md", 'picoclaw submit --json "Summarize the retry policy"'), {
        env: defaultUrl,
        home,
      });
      expect(json.code).toBe(0);
      expect(json.stdout.split("\n").some((l) => l.startsWith("{") && JSON.parse(l).kind === "answer")).toBe(true);
      const watch = await runPicoclaw(documented("README.md", "picoclaw watch r-e6f351d803", [["r-e6f351d803", request]]), {
        env: defaultUrl,
        home,
      });
      expect({ code: watch.code, same: watch.stdout.includes(`# Swarm answer (request ${request})`) }).toEqual({ code: 0, same: true });
      const failed = await runPicoclaw(documented("README.md", "picoclaw requests --failed"), { env: defaultUrl, home });
      expect({ code: failed.code, listed: failed.output.includes(request) }).toEqual({ code: 0, listed: false });

      // README "Dashboards": the live one prints frames until stopped; the web page serves the same state.
      const live = procs.track(picoclaw(documented("README.md", "picoclaw --swarm.dashboard"), { env: defaultUrl, home }));
      await live.waitForLine(/PicoClaw Swarm Status Dashboard/, 30_000);
      await live.waitForLine(/Roles: +1 coordinator\(s\), 2 worker\(s\)/, 30_000);
      live.signal("SIGINT");
      expect(await live.exited(15_000)).toBe(0);
      const webPort = await freePort();
      const web = procs.track(
        picoclaw(
          documented("README.md", "picoclaw --swarm.dashboard --swarm.http.listen 127.0.0.1:8090", [
            ["127.0.0.1:8090", `127.0.0.1:${webPort}`],
          ]),
          { env: defaultUrl, home },
        ),
      );
      const state = await waitFor(
        "the web dashboard's /api/state with three nodes",
        async () => {
          const r = await fetch(`http://127.0.0.1:${webPort}/api/state`).catch(() => undefined);
          const body = r?.ok ? ((await r.json()) as { snapshot?: { nodes?: unknown[] } }) : undefined;
          return (body?.snapshot?.nodes?.length ?? 0) >= 3 ? body : undefined;
        },
        30_000,
        100,
      );
      expect(state.snapshot?.nodes?.length).toBe(3);
      expect((await fetch(`http://127.0.0.1:${webPort}/`)).status).toBe(200);
      web.signal("SIGINT");
      expect(await web.exited(15_000)).toBe(0);

      // README "The swarm as an OpenAI model": the gateway and the curl call, as written.
      const gwPort = await freePort();
      const gateway = procs.track(
        picoclaw(
          documented(
            "README.md",
            "PICOCLAW_SWARM_GATEWAY_API_KEYS=sk-swarm-change-me picoclaw gateway --swarm.http.listen 127.0.0.1:8080",
            [["127.0.0.1:8080", `127.0.0.1:${gwPort}`]],
          ),
          { env: defaultUrl, home },
        ),
      );
      await gateway.waitForLine(/Gateway ready/, 30_000);
      const curl = documented(
        "README.md",
        `curl http://localhost:8080/v1/chat/completions -H "Authorization: Bearer sk-swarm-change-me" -H "Content-Type: application/json" -d '{"model": "picoclaw-swarm", "messages": [{"role": "user", "content": "Review this change: the HTTP client now retries failed requests"}]}'`,
        [["http://localhost:8080", `http://localhost:${gwPort}`]],
      );
      const chat = await runCommand(curl.argv);
      expect({ code: chat.code, stderr: chat.code === 0 ? "" : chat.stderr }).toEqual({ code: 0, stderr: "" }); // (curl's progress meter is on stderr)
      const completion = JSON.parse(chat.stdout) as { choices: { message: { content: string } }[]; usage: { total_tokens: number } };
      expect(completion.choices[0]!.message.content).toContain("4 completed, 0 failed or skipped");
      expect(completion.usage.total_tokens).toBeGreaterThan(0);
      gateway.signal("SIGINT");
      expect(await gateway.exited(15_000)).toBe(0);

      // Ctrl-C in each terminal: every node leaves, and the last one out stops the embedded server.
      await stopAll(nodes);
      expect(nodes.some((n) => n.countLines(/Embedded NATS stopped/) > 0)).toBe(true);
      await waitFor(`the embedded nats-server on port ${port} to stop`, async () => !(await portOpen("127.0.0.1", port, 200)), 15_000);
    } finally {
      for (const n of nodes) if (n.proc.exitCode === null) n.proc.kill("SIGKILL");
      if (natsPid && (await portOpen("127.0.0.1", port, 200))) process.kill(natsPid, "SIGTERM");
    }
  }, 180_000);
});

describe("README.md: npm run demo", () => {
  test("brings up the demo swarm on embedded NATS, prints the code review and a dashboard frame, stops everything", async () => {
    expect(readFileSync(join(ROOT, "README.md"), "utf8")).toContain("`PICOCLAW_DEMO_PORT=4333 npm run demo`");
    const port = await freePort();
    const r = await runCommand(["npm", "run", "demo"], { env: { PICOCLAW_DEMO_PORT: String(port), HOME: tempHome() }, timeoutMs: 150_000 });
    const out = `${r.stdout}${r.stderr}`;
    expect({ code: r.code, output: r.code === 0 ? "" : out }).toEqual({ code: 0, output: "" });
    expect(out).toContain("4 completed, 0 failed or skipped");
    expect(out).toMatch(/Roles: +1 coordinator\(s\), 1 worker\(s\), 4 specialist\(s\)/);
    expect(out).toContain("==> Stopping the demo swarm");
    await waitFor(`the demo's nats-server on port ${port} to stop`, async () => !(await portOpen("127.0.0.1", port, 200)), 15_000);
  }, 180_000);
});

/** docs/deploy.md's `nats-server ...` line as a process, with its port and store moved. */
async function documentedNatsServer(cmd: string, port: number, swaps: [string, string][] = []) {
  const dir = mkdtempSync(join(tmpdir(), "picoclaw-docs-nats-"));
  const { argv } = documented("docs/deploy.md", cmd, [
    ["-p 4222", `-a 127.0.0.1 -p ${port}`],
    ["-sd /var/lib/nats", `-sd ${dir}`],
    ...swaps,
  ]);
  const proc = Bun.spawn(argv, { stdout: "ignore", stderr: "ignore" });
  await waitFor(`${cmd} on port ${port}`, async () => proc.exitCode === null && (await portOpen("127.0.0.1", port, 200)), 15_000);
  return {
    async stop() {
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, Bun.sleep(5_000)]);
      if (proc.exitCode === null) proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("docs/deploy.md, single machine and several machines on one nats-server", () => {
  test("single machine: nats-server -js, a coordinator and a worker, the review answered", async () => {
    const port = await freePort();
    const nats = await documentedNatsServer("nats-server -js -p 4222 -sd /var/lib/nats", port);
    const home = tempHome();
    const url: [string, string] = ["nats://localhost:4222", `nats://localhost:${port}`];
    try {
      const nodes = [
        picoclaw(
          documented("docs/deploy.md", "picoclaw --swarm.enabled --swarm.role coordinator --swarm.nats.urls nats://localhost:4222", [url]),
          {
            home,
          },
        ),
        picoclaw(
          documented(
            "docs/deploy.md",
            "picoclaw --swarm.enabled --swarm.role worker --swarm.capabilities code,research --swarm.nats.urls nats://localhost:4222",
            [url],
          ),
          { home },
        ),
      ].map((n) => procs.track(n));
      for (const n of nodes) await joined(n);
      const r = await runPicoclaw(
        documented(
          "docs/deploy.md",
          'picoclaw submit --swarm.nats.urls nats://localhost:4222 "Review this change: the HTTP client now retries failed requests"',
          [url],
        ),
        { home },
      );
      expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
      expect(r.stdout).toContain("4 completed, 0 failed or skipped");
      await stopAll(nodes);
    } finally {
      await nats.stop();
    }
  }, 90_000);

  test("multi-machine, one NATS server: the token required, a coordinator and two workers join, the review answered", async () => {
    const port = await freePort();
    const token = "docs-one-server-token";
    const tokenSwap: [string, string] = ["<token>", token];
    const nats = await documentedNatsServer("nats-server -js -p 4222 -sd /var/lib/nats --auth <token>", port, [tokenSwap]);
    const machine1: [string, string] = ["nats://machine1:4222", `nats://127.0.0.1:${port}`];
    try {
      // machine1 (its own HOME: machines share nothing), then machine2 and machine3.
      const coordinator = picoclaw(
        documented(
          "docs/deploy.md",
          "picoclaw --swarm.enabled --swarm.role coordinator --swarm.nats.urls nats://localhost:4222 --swarm.nats.token <token>",
          [["nats://localhost:4222", `nats://localhost:${port}`], tokenSwap],
        ),
        { home: tempHome() },
      );
      const workerLine = "picoclaw --swarm.enabled --swarm.role worker --swarm.nats.urls nats://machine1:4222 --swarm.nats.token <token>";
      const workers = [0, 1].map(() => picoclaw(documented("docs/deploy.md", workerLine, [machine1, tokenSwap]), { home: tempHome() }));
      const nodes = [coordinator, ...workers].map((n) => procs.track(n));
      const ids = await Promise.all(workers.map(nodeIdOf));
      await joined(coordinator);
      for (const id of ids) await coordinator.waitForLine(new RegExp(`Node joined swarm node=${id}\\b`), 30_000);
      const r = await runPicoclaw(
        documented(
          "docs/deploy.md",
          'picoclaw submit --swarm.nats.urls nats://machine1:4222 --swarm.nats.token <token> "Review this change: the HTTP client now retries failed requests"',
          [machine1, tokenSwap],
        ),
        { home: tempHome() },
      );
      expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
      expect(r.stdout).toContain("4 completed, 0 failed or skipped");
      const refused = await connect({ servers: `nats://127.0.0.1:${port}`, reconnect: false }).then(
        (nc) => nc.close().then(() => "connected"),
        (err: Error) => err.message,
      );
      expect(refused).toMatch(/Authorization Violation/i);
      await stopAll(nodes);
    } finally {
      await nats.stop();
    }
  }, 90_000);
});

describe("docs/deploy.md, multi-machine: the documented node command lines on the three-server cluster", () => {
  test("the coordinator and worker lines, as flags, join the cluster's swarm with replicas 3", async () => {
    const swaps: [string, string][] = [
      ["nats://machine1:4222,nats://machine2:4222,nats://machine3:4222", urls],
      ["<token>", TOKEN],
    ];
    const coordinator = procs.track(
      picoclaw(
        documented(
          "docs/deploy.md",
          "picoclaw --swarm.enabled --swarm.role coordinator --swarm.nats.urls nats://machine1:4222,nats://machine2:4222,nats://machine3:4222 --swarm.nats.token <token> --swarm.nats.replicas 3",
          swaps,
        ),
        { home: tempHome() },
      ),
    );
    const worker = procs.track(
      picoclaw(
        documented(
          "docs/deploy.md",
          "picoclaw --swarm.enabled --swarm.role worker --swarm.capabilities code,research --swarm.nats.urls nats://machine1:4222,nats://machine2:4222,nats://machine3:4222 --swarm.nats.token <token> --swarm.nats.replicas 3",
          swaps,
        ),
        { home: tempHome() },
      ),
    );
    const workerId = await nodeIdOf(worker);
    await joined(coordinator);
    await coordinator.waitForLine(new RegExp(`Node joined swarm node=${workerId}\\b`), 30_000);
    await stopAll([coordinator, worker]);
  }, 90_000);
});

describe("docs/deploy.md: the code-review example and troubleshooting", () => {
  let nats: NatsServer;
  const home = tempHome();
  const env = () => ({ PICOCLAW_SWARM_NATS_URLS: nats.url });
  const swarmNodes: RoleProcess[] = [];
  const SPECIALISTS = ["rust,go,python", "security,audit", "docs,writing", "testing,qa"];
  const SPECIALIST_LINES = [
    "picoclaw --swarm.role specialist --swarm.capabilities rust,go,python",
    "picoclaw --swarm.role specialist --swarm.capabilities security,audit",
    "picoclaw --swarm.role specialist --swarm.capabilities docs,writing",
    "picoclaw --swarm.role specialist --swarm.capabilities testing,qa",
  ];
  const FOR_REAL_LINES = [
    "picoclaw --swarm.role specialist --swarm.capabilities rust,go,python --agents.defaults.workspace /srv/repo --tools.exec.enabled",
    "picoclaw --swarm.role specialist --swarm.capabilities security,audit --agents.defaults.workspace /srv/repo --tools.exec.enabled",
    "picoclaw --swarm.role specialist --swarm.capabilities docs,writing --agents.defaults.workspace /srv/repo --tools.exec.enabled",
    "picoclaw --swarm.role specialist --swarm.capabilities testing,qa --agents.defaults.workspace /srv/repo --tools.exec.enabled",
  ];
  const REVIEW_LINE = 'picoclaw submit "Review this change: the HTTP client now retries failed requests"';
  beforeAll(async () => {
    nats = await startNatsServer();
  });
  afterAll(async () => {
    for (const n of swarmNodes) if (n.proc.exitCode === null) n.proc.kill("SIGKILL");
    llm.script(undefined);
    await nats?.stop();
  });

  test("a coordinator and four specialists: each review on the specialist of its area, one synthesized review", async () => {
    // On the NATS server of section 2 (nats://localhost:4222 by default): here the test's, through the environment.
    const coordinator = picoclaw(documented("docs/deploy.md", "picoclaw --swarm.role coordinator --swarm.capabilities coordination"), {
      env: env(),
      home,
    });
    const specialists = SPECIALIST_LINES.map((line) => picoclaw(documented("docs/deploy.md", line), { env: env(), home }));

    swarmNodes.push(...[coordinator, ...specialists].map((n) => procs.track(n)));
    const ids = await Promise.all(specialists.map(nodeIdOf));
    for (const id of ids) await coordinator.waitForLine(new RegExp(`Node joined swarm node=${id}\\b`), 30_000);

    const r = await runPicoclaw(documented("docs/deploy.md", REVIEW_LINE), { env: env(), home });
    expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
    const planned =
      "planned by the heuristic planner: code review [rust], security review [security], docs review [docs], testing review [testing]";
    expect(r.output).toContain(planned);
    expect(readFileSync(join(ROOT, "docs/deploy.md"), "utf8")).toContain(planned);
    for (const [i, area] of ["code", "security", "docs", "testing"].entries()) {
      expect(r.stdout).toContain(`## ${area} review — completed`);
      expect(r.output).toMatch(new RegExp(`${area} review: \\S+ on ${ids[i]}`)); // on the specialist of its area
    }
  }, 120_000);

  test("troubleshooting: check-nats, config, the dashboard, a rejection naming what is online, an invalid value, Temporal off", async () => {
    const check = await runPicoclaw(documented("docs/deploy.md", "picoclaw --swarm.check-nats"), { env: env(), home });
    expect({ code: check.code, out: check.output }).toEqual({ code: 0, out: expect.stringContaining("JetStream ✓ enabled") });
    expect(check.output).toContain("all 1 NATS URL(s) OK");
    const deadPort = await freePort();
    const dead = await runPicoclaw(
      documented("docs/deploy.md", "picoclaw --swarm.check-nats --swarm.nats.urls nats://machine1:4222", [
        ["machine1:4222", `127.0.0.1:${deadPort}`],
      ]),
      { home },
    );
    expect({ code: dead.code, out: dead.output }).toEqual({
      code: 1,
      out: expect.stringContaining("unreachable: connection refused (is nats-server running and is the port right?)"),
    });
    const live = await runPicoclaw(
      documented("docs/deploy.md", "picoclaw --swarm.check-nats --swarm.nats.urls nats://machine1:4222", [
        ["nats://machine1:4222", nats.url],
      ]),
      { home },
    );
    expect(live.code).toBe(0);

    const config = await runPicoclaw(documented("docs/deploy.md", "picoclaw config"), { env: env(), home });
    expect(config.code).toBe(0);
    expect(config.output).toContain(`swarm.nats.urls = ["${nats.url}"]  # env PICOCLAW_SWARM_NATS_URLS`);

    const frame = await runPicoclaw(documented("docs/deploy.md", "picoclaw --swarm.dashboard --once"), { env: env(), home });
    expect(frame.code).toBe(0);
    expect(frame.output).toMatch(/Roles: +1 coordinator\(s\), 0 worker\(s\), 4 specialist\(s\)/);
    expect(frame.output).toMatch(/Swarm H-id: h-[0-9a-f]+/);
    const snapshot = await runRole("picoclaw.ts", ["--swarm.dashboard", "--json"], { env: env(), home });
    const nodes = (JSON.parse(snapshot.stdout) as { nodes: { capabilities: string[]; running: number; max_concurrent: number }[] }).nodes;
    expect(nodes.map((n) => n.capabilities.join(",")).sort()).toEqual(["coordination", ...SPECIALISTS].sort());

    // The rejection the page shows: the capability named, and what is online listed.
    const docs = readFileSync(join(ROOT, "docs/deploy.md"), "utf8");
    const shown = docs.match(/^picoclaw: request r-\w+ rejected: (.*)$/m)?.[1];
    expect(shown).toBeDefined();
    const gpu = await runRole("picoclaw.ts", ["submit", "--capabilities", "gpu", "train it"], { env: env(), home });
    expect(gpu.code).toBe(1);
    expect(gpu.output).toContain(`rejected: ${shown}`);
    const requests = await runRole("picoclaw.ts", ["requests", "--failed"], { env: env(), home });
    expect(requests.code).toBe(0);

    // An invalid value: exit 2 and the line the page shows.
    const invalid = 'picoclaw: invalid config swarm.max_concurrent (got "0") from flag --swarm.max_concurrent: an integer from 1 to 1000';
    expect(docs).toContain(`\n${invalid}\n`);
    const bad = await runRole("picoclaw.ts", ["--swarm.role", "coordinator", "--swarm.max_concurrent", "0"], { env: env(), home });
    expect({ code: bad.code, out: bad.output }).toEqual({ code: 2, out: expect.stringContaining(invalid) });

    // Temporal off: a coordinator that starts without a word about Temporal.
    // (`temporal server start-dev` is what test/helpers/temporal-server.ts runs for test/temporal.test.ts.)
    const off = procs.track(
      picoclaw(documented("docs/deploy.md", 'picoclaw --swarm.role coordinator --swarm.temporal.address=""'), { env: env(), home }),
    );
    await joined(off);
    await stopAll([off]);
    expect(off.lines.filter((l) => /temporal/i.test(l))).toEqual([]);
  }, 120_000);

  test("for real: specialists with an LLM, the repository as workspace and exec; the last commit and a piped diff reviewed", async () => {
    // The first block's specialists leave, so the reviews go to the new ones.
    await stopAll(swarmNodes.slice(1));
    const repo = join(tempHome(), "repo");
    mkdirSync(join(repo, "src"), { recursive: true });
    const git = async (...args: string[]) => {
      const r = await runCommand(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", ...args], { cwd: repo });
      if (r.code !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
      return r.stdout;
    };
    writeFileSync(join(repo, "src/retry.ts"), "export const attempts = 3;\n");
    await git("init", "-q");
    await git("add", ".");
    await git("commit", "-qm", "first");
    writeFileSync(join(repo, "src/retry.ts"), "export const attempts = 5; // retry failed HTTP calls\n");
    await git("commit", "-qam", "retry failed HTTP calls five times");
    // A model that asks for the diff with exec, then answers quoting the tool's output.
    llm.script((b: ChatRequestBody) => {
      const tools = (b.messages ?? []).filter((m) => m.role === "tool");
      if (!b.tools?.some((t) => t.function.name === "exec")) return undefined;
      if (tools.length === 0) return { tool_calls: [{ name: "exec", arguments: JSON.stringify({ command: "git diff HEAD~1" }) }] };
      return `Reviewed the diff: ${tools[0]!.content.includes("+export const attempts = 5;") ? "attempts 3 -> 5" : "no diff seen"}`;
    });

    const exported = documented(
      "docs/deploy.md",
      "export PICOCLAW_LLM_BASE_URL=http://localhost:11434/v1 PICOCLAW_LLM_MODEL=qwen2.5-coder:7b",
      [["http://localhost:11434/v1", llm.url]],
    );
    expect(exported.argv[0]).toBe("export");
    const llmEnv = Object.fromEntries(exported.argv.slice(1).map((w) => [w.slice(0, w.indexOf("=")), w.slice(w.indexOf("=") + 1)]));
    expect(Object.keys(llmEnv)).toEqual(["PICOCLAW_LLM_BASE_URL", "PICOCLAW_LLM_MODEL"]);
    // README.md's "Tools" shows the same lines (one of the four specialists).
    for (const line of [FOR_REAL_LINES[1]!, 'picoclaw submit "Review the last commit"']) expect(docCommands("README.md")).toContain(line);
    expect(docCommands("README.md")).toContain(
      "export PICOCLAW_LLM_BASE_URL=http://localhost:11434/v1 PICOCLAW_LLM_MODEL=qwen2.5-coder:7b",
    );
    const specialists = FOR_REAL_LINES.map((line) =>
      procs.track(picoclaw(documented("docs/deploy.md", line, [["/srv/repo", repo]]), { env: { ...env(), ...llmEnv }, home })),
    );
    swarmNodes.push(...specialists);
    for (const s of specialists) {
      const ready = await s.waitForLine(/Tools ready /, 30_000);
      expect(ready).toContain(`workspace=${repo}`);
      expect(ready).toMatch(/tools=\S*\bexec\b/);
      const id = await nodeIdOf(s);
      await swarmNodes[0]!.waitForLine(new RegExp(`Node joined swarm node=${id}\\b`), 30_000);
    }

    const last = await runPicoclaw(documented("docs/deploy.md", 'picoclaw submit "Review the last commit"'), { env: env(), home });
    expect({ code: last.code, output: last.code === 0 ? "" : last.output }).toEqual({ code: 0, output: "" });
    expect(last.stdout.split("Reviewed the diff: attempts 3 -> 5").length - 1).toBe(4);
    expect(last.output).toMatch(/exec "git diff HEAD~1" on claw-\w+, \S+, ok/); // each tool call as it ends

    const diff = await git("diff", "HEAD~1");
    const piped = await runPicoclaw(afterPipe(documented("docs/deploy.md", "git diff | picoclaw submit -")), {
      env: env(),
      home,
      stdin: diff,
    });
    expect({ code: piped.code, output: piped.code === 0 ? "" : piped.output }).toEqual({ code: 0, output: "" });
    expect(piped.stdout).toContain("## security review — completed");
    await stopAll(swarmNodes.filter((n) => n.proc.exitCode === null));
  }, 150_000);
});

describe("docs/security.md: signing end to end", () => {
  test("keygen for each role, the four config files, a signed swarm: answers verified, an untrusted answer refused, drain only with the admin key", async () => {
    const page = readFileSync(join(ROOT, "docs/security.md"), "utf8");
    const nats = await startNatsServer();
    const dir = mkdtempSync(join(tmpdir(), "picoclaw-signing-")); // stands for /etc/picoclaw
    const home = tempHome();
    const paths: [string, string] = ["/etc/picoclaw/", `${dir}/`];
    const nodes: RoleProcess[] = [];
    try {
      // 1. A key for each role; the page's sample output shows which example key is which role's.
      const keys: Record<string, { shown: string; real: string }> = {};
      const KEYGEN_LINES = {
        coordinator: "picoclaw keygen /etc/picoclaw/coordinator.nk",
        worker: "picoclaw keygen /etc/picoclaw/worker.nk",
        admin: "picoclaw keygen /etc/picoclaw/admin.nk",
      };
      for (const [role, line] of Object.entries(KEYGEN_LINES)) {
        const r = await runPicoclaw(documented("docs/security.md", line, [paths]), { home });
        expect({ code: r.code, out: r.output }).toEqual({
          code: 0,
          out: expect.stringContaining(`wrote the seed to ${dir}/${role}.nk (readable by you only; keep it secret)`),
        });
        expect(statSync(join(dir, `${role}.nk`)).mode & 0o777).toBe(0o600);
        const shown = page.match(new RegExp(`wrote the seed to /etc/picoclaw/${role}\\.nk .*\\npublic key: (U[A-Z2-7]{55})`))?.[1];
        const real = r.stdout.match(/public key: (U[A-Z2-7]{55})/)?.[1];
        if (!shown || !real) throw new Error(`no public key for ${role} on the page or in:\n${r.output}`);
        keys[role] = { shown, real };
      }
      const again = await runPicoclaw(shellWords(`picoclaw keygen ${dir}/admin.nk`), { home });
      expect(again.code).toBe(2); // never overwrites
      const pub = await runPicoclaw(documented("docs/security.md", "picoclaw keygen --public /etc/picoclaw/coordinator.nk", [paths]), {
        home,
      });
      expect({ code: pub.code, out: pub.stdout.trim() }).toEqual({ code: 0, out: keys.coordinator!.real });
      expect(page).toContain(`\`\`\`\n${keys.coordinator!.shown}\n\`\`\``);

      // 3. The config of each process, as the page writes them, with this test's keys, paths and NATS.
      const keySwaps: [string, string][] = Object.values(keys).map((k) => [k.shown, k.real]);
      for (const name of ["coordinator", "worker", "submit", "admin"]) {
        const block = page.match(new RegExp(`\`\`\`yaml\\n(# /etc/picoclaw/${name}\\.yaml[\\s\\S]*?)\`\`\``))?.[1];
        if (!block) throw new Error(`docs/security.md has no yaml block for /etc/picoclaw/${name}.yaml`);
        let text = block;
        for (const [from, to] of [...keySwaps, paths, ["nats://localhost:4222", nats.url] as [string, string]])
          text = text.split(from).join(to);
        writeFileSync(join(dir, `${name}.yaml`), text);
      }
      // Each key went where the page says: the coordinator's to the worker and submit, the workers' to the coordinator, the admin's to both nodes.
      const trusted = (name: string) => readFileSync(join(dir, `${name}.yaml`), "utf8");
      expect(trusted("worker")).toContain(`trusted_coordinators: [${keys.coordinator!.real}]`);
      expect(trusted("submit")).toContain(`trusted_coordinators: [${keys.coordinator!.real}]`);
      expect(trusted("coordinator")).toContain(`trusted_workers: [${keys.worker!.real}]`);
      for (const n of ["coordinator", "worker"]) expect(trusted(n)).toContain(`trusted_admins: [${keys.admin!.real}]`);
      // The admin believes the nodes' replies only when signed by their keys.
      expect(trusted("admin")).toContain(`trusted_coordinators: [${keys.coordinator!.real}]`);
      expect(trusted("admin")).toContain(`trusted_workers: [${keys.worker!.real}]`);

      // 4. Run it.
      const coordinator = procs.track(
        picoclaw(documented("docs/security.md", "picoclaw --config /etc/picoclaw/coordinator.yaml", [paths]), { home }),
      );
      const worker = procs.track(
        picoclaw(documented("docs/security.md", "picoclaw --config /etc/picoclaw/worker.yaml", [paths]), { home }),
      );
      nodes.push(coordinator, worker);
      expect(await coordinator.waitForLine(/Signing on/, 30_000)).toContain(`public_key=${keys.coordinator!.real}`);
      expect(await worker.waitForLine(/Signing on/, 30_000)).toContain(`public_key=${keys.worker!.real}`);
      const workerId = await nodeIdOf(worker);
      await joined(coordinator);
      await coordinator.waitForLine(new RegExp(`Node joined swarm node=${workerId}\\b`), 30_000);

      const review = await runPicoclaw(
        documented(
          "docs/security.md",
          'picoclaw --config /etc/picoclaw/submit.yaml submit "Review this change: the HTTP client now retries failed requests"',
          [paths],
        ),
        { home },
      );
      expect({ code: review.code, output: review.code === 0 ? "" : review.output }).toEqual({ code: 0, output: "" });
      expect(review.stdout).toContain("4 completed, 0 failed or skipped");
      expect(review.output).not.toContain("refused");
      const request = requestIdOf(review.output)!;
      const watch = await runPicoclaw(
        documented("docs/security.md", "picoclaw --config /etc/picoclaw/submit.yaml watch r-447878d32d", [
          paths,
          ["r-447878d32d", request],
        ]),
        { home },
      );
      expect({ code: watch.code, same: watch.stdout.includes(`# Swarm answer (request ${request})`) }).toEqual({ code: 0, same: true });

      // 5. A client that trusts another key (here the worker's) refuses the real answer, says so, and ends with exit 3.
      writeFileSync(join(dir, "wrong.yaml"), trusted("submit").replace(keys.coordinator!.real, keys.worker!.real));
      const wrong = await runRole(
        "picoclaw.ts",
        ["--config", join(dir, "wrong.yaml"), "submit", "--timeout", "1s", "Review this change: unverifiable"],
        {
          home,
          timeoutMs: 40_000,
        },
      );
      expect(wrong.code).toBe(3);
      expect(wrong.stdout).not.toContain("# Swarm answer");
      expect(wrong.output).toMatch(/picoclaw: refused an answer on picoclaw\.prod\.event\.request\.r-\w+ \(signed by untrusted key U/);
      expect(wrong.output).toMatch(/no answer to request r-\w+ within \d+s/);
      expect(page).toMatch(
        /picoclaw: refused an answer on picoclaw\.prod\.event\.request\.r-\w+ \(signed by untrusted key U\w+…; it names coordinator claw-\w+\); still waiting for the real one/,
      );
      // Signing on without trusted_coordinators: stops at once, naming the key.
      const noTrust = await runRole(
        "picoclaw.ts",
        ["--config", join(dir, "admin.yaml"), "--swarm.security.trusted_coordinators", "", "submit", "hello"],
        { home },
      );
      expect({ code: noTrust.code, out: noTrust.output }).toEqual({
        code: 2,
        out: expect.stringContaining("swarm.security.trusted_coordinators"),
      });
      // A client without signing checks nothing: it prints the answer, saying it did not check it.
      const unchecked = await runRole("picoclaw.ts", ["submit", "--swarm.hid", "prod", "--swarm.nats.urls", nats.url, "hello unchecked"], {
        home,
      });
      expect({
        code: unchecked.code,
        answered: unchecked.stdout.includes("# Swarm answer"),
        warned: /this answer is signed by U[A-Z2-7]{55} but was NOT verified: set swarm.security.signing/.test(unchecked.output),
      }).toEqual({ code: 0, answered: true, warned: true });

      // Drain: unsigned is refused by the node; signing without a key stops before sending; the admin's is obeyed.
      const unsigned = await runPicoclaw(
        documented("docs/security.md", "picoclaw --swarm.hid prod --swarm.nats.urls nats://localhost:4222 drain claw-fa510832", [
          ["nats://localhost:4222", nats.url],
          ["claw-fa510832", workerId],
        ]),
        { home },
      );
      const refusal = `${workerId}: refused: drain unsigned (signing is on: it must be signed by a key in swarm.security.trusted_admins)`;
      expect({ code: unsigned.code, out: unsigned.output }).toEqual({ code: 1, out: expect.stringContaining(refusal) });
      expect(page).toContain(refusal.replace(workerId, "claw-fa510832"));
      const keyless = await runRole("picoclaw.ts", ["--config", join(dir, "submit.yaml"), "drain", workerId], { home });
      expect({ code: keyless.code, out: keyless.output }).toEqual({ code: 2, out: expect.stringContaining("swarm.security.key_file") });
      expect(worker.proc.exitCode).toBeNull();
      const drain = await runPicoclaw(
        documented("docs/security.md", "picoclaw --config /etc/picoclaw/admin.yaml drain claw-fa510832", [
          paths,
          ["claw-fa510832", workerId],
        ]),
        { home },
      );
      expect({ code: drain.code, out: drain.output }).toEqual({ code: 0, out: expect.stringContaining(`${workerId}: drain started`) });
      expect(await worker.exited(20_000)).toBe(0);
      await stopAll([coordinator]);
    } finally {
      for (const n of nodes) if (n.proc.exitCode === null) n.proc.kill("SIGKILL");
      await nats.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);
});
