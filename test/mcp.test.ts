// MCP servers as tools of a worker node, against real servers: the reference server-everything (stdio,
// streamable HTTP, SSE), server-filesystem, and the counter fixture that crashes on request.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort, portOpen } from "../lib/embedded-nats.ts";
import type { Fields, Logger } from "../lib/log.ts";
import {
  type McpHub,
  type McpOptions,
  type McpServerConfig,
  type McpServersConfig,
  startMcpServers,
  toolNames,
} from "../roles/worker/mcp.ts";
import { createRegistry, runTool, type Tool } from "../roles/worker/tools/index.ts";
import { waitFor } from "./helpers/wait.ts";

const ROOT = join(import.meta.dir, "..");
const EVERYTHING = join(ROOT, "node_modules/@modelcontextprotocol/server-everything/dist/index.js");
const FILESYSTEM = join(ROOT, "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
const COUNTER = join(ROOT, "test/fixtures/mcp-counter-server.ts");
const BUN = process.execPath;

const dir = mkdtempSync(join(tmpdir(), "picoclaw-mcp-"));
const hubs: McpHub[] = [];
const children: Subprocess[] = [];

afterAll(async () => {
  await Promise.all(hubs.map((h) => h.close()));
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

interface Line {
  level: string;
  msg: string;
  fields?: Fields;
}

/** A Logger that keeps its lines, so a test reads what an operator would. */
function captureLog(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (msg: string, fields?: Fields) => void lines.push({ level, msg, fields });
  return {
    lines,
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    warnLimited: (_key, _every, msg, fields) => at("warn")(msg, fields),
    setLevel: () => {},
  };
}

/** A server entry as the config schema gives it (defaults filled). */
function server(s: Partial<McpServerConfig>): McpServerConfig {
  return { enabled: true, args: [], env: {}, headers: {}, optional: false, ...s };
}

async function start(servers: McpServersConfig, log = captureLog(), more: Partial<McpOptions> = {}): Promise<McpHub> {
  const hub = await startMcpServers(servers, { log, workspace: dir, ...more });
  hubs.push(hub);
  return hub;
}

const ctx = () => ({ signal: AbortSignal.timeout(20_000) });

function tool(hub: McpHub, name: string): Tool {
  const t = hub.tools().find((x) => x.name === name);
  if (!t) throw new Error(`no tool ${name}; offered: ${hub.tools().map((x) => x.name)}`);
  return t;
}

/** Pids of the processes whose command line holds `marker` (a path unique to one test). */
function pidsWith(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** server-everything over HTTP on a free port; resolves once it listens. */
async function everythingHttp(mode: "streamableHttp" | "sse", port?: number): Promise<{ port: number; proc: Subprocess }> {
  const p = port ?? (await freePort());
  const proc = Bun.spawn([BUN, EVERYTHING, mode], { env: { ...process.env, PORT: String(p) }, stdout: "ignore", stderr: "ignore" });
  children.push(proc);
  await waitFor(`server-everything ${mode} listening on ${p}`, () => portOpen("127.0.0.1", p), 15_000);
  return { port: p, proc };
}

describe("stdio: server-everything", () => {
  test("its tools are offered as mcp_everything_<tool>, echo answers, annotations say what is replay-safe", async () => {
    const log = captureLog();
    const began = performance.now();
    const hub = await start({ everything: server({ command: BUN, args: [EVERYTHING, "stdio"] }) }, log);
    console.info(`server-everything stdio: connect + tools/list in ${Math.round(performance.now() - began)} ms`);

    const names = hub.tools().map((t) => t.name);
    expect(names).toContain("mcp_everything_echo");
    expect(names).toContain("mcp_everything_get-sum");
    expect(names.every((n) => n.startsWith("mcp_everything_") && n.length <= 64)).toBe(true);
    expect(hub.status()).toEqual([{ name: "everything", state: "up", tools: names.length }]);

    const echo = tool(hub, "mcp_everything_echo");
    expect(echo.parameters).toMatchObject({ type: "object", properties: { message: { type: "string" } } });
    expect(await echo.execute({ message: "hello swarm" }, ctx())).toEqual({ content: "Echo: hello swarm", isError: false });
    // echo is read-only; toggling simulated logging changes the server's state.
    expect(echo.replaySafe).toBe(true);
    expect(tool(hub, "mcp_everything_toggle-simulated-logging").replaySafe).toBe(false);

    // Through the registry a node offers, as the agent loop calls it.
    const registry = createRegistry([], () => hub.tools());
    const run = await runTool(registry, "mcp_everything_get-sum", '{"a": 2, "b": 40}', { ...ctx(), maxBytes: 4096 });
    expect(run).toMatchObject({ outcome: "ok", isError: false });
    expect(run.content).toContain("42");
    // A call the server refuses stays an error the model sees (and may correct).
    const refused = await runTool(registry, "mcp_everything_get-sum", '{"a": "two"}', { ...ctx(), maxBytes: 4096 });
    expect(refused).toMatchObject({ outcome: "error", isError: true });
    expect(refused.content).toMatch(/get-sum/);
    const image = await tool(hub, "mcp_everything_get-tiny-image").execute({}, ctx());
    expect(image.content).toContain("[image image/png");
  });

  test("the server gets its configured env over a short default list, never the node's secrets", async () => {
    process.env.PICOCLAW_TEST_SECRET = "do-not-leak";
    try {
      const hub = await start({ envcheck: server({ command: BUN, args: [EVERYTHING, "stdio"], env: { GREETING: "hi" } }) });
      const env = JSON.parse((await tool(hub, "mcp_envcheck_get-env").execute({}, ctx())).content) as Record<string, string>;
      expect(env.GREETING).toBe("hi");
      expect(env.PATH).toBeTruthy();
      expect(env.PICOCLAW_TEST_SECRET).toBeUndefined();
    } finally {
      delete process.env.PICOCLAW_TEST_SECRET;
    }
  });
});

test("isolation wraps a stdio server's argv", async () => {
  const wrapped: string[][] = [];
  const isolation = (argv: string[]) => {
    wrapped.push(argv);
    return ["env", "WRAPPED_BY=isolation", ...argv];
  };
  const hub = await start({ boxed: server({ command: BUN, args: [EVERYTHING, "stdio"] }) }, captureLog(), { isolation });
  expect(wrapped).toEqual([[BUN, EVERYTHING, "stdio"]]);
  const env = JSON.parse((await tool(hub, "mcp_boxed_get-env").execute({}, ctx())).content) as Record<string, string>;
  expect(env.WRAPPED_BY).toBe("isolation");
});

describe("HTTP: server-everything", () => {
  test("streamable HTTP: connects by url, echo answers; a lost server comes back", async () => {
    const { port, proc } = await everythingHttp("streamableHttp");
    const url = `http://127.0.0.1:${port}/mcp`;
    const log = captureLog();
    const hub = await start({ remote: server({ url, headers: { "X-Test": "1" } }) }, log);
    expect(await tool(hub, "mcp_remote_echo").execute({ message: "over http" }, ctx())).toEqual({
      content: "Echo: over http",
      isError: false,
    });

    // The server goes away: the call fails, the tools are withdrawn, and return once it listens again.
    const echo = tool(hub, "mcp_remote_echo");
    proc.kill("SIGKILL");
    await proc.exited;
    await expect(echo.execute({ message: "anyone?" }, ctx())).rejects.toThrow(/MCP server remote/);
    expect(hub.status()).toEqual([{ name: "remote", state: "down", tools: 0 }]);
    await everythingHttp("streamableHttp", port);
    await waitFor("remote's tools back", () => hub.tools().some((t) => t.name === "mcp_remote_echo"), 20_000);
    expect(await tool(hub, "mcp_remote_echo").execute({ message: "again" }, ctx())).toEqual({ content: "Echo: again", isError: false });
    expect(log.lines.some((l) => l.level === "warn" && l.fields?.server === "remote")).toBe(true);
  });

  test("an optional server not listening yet is offered once it is", async () => {
    const port = await freePort();
    const log = captureLog();
    const hub = await start({ late: server({ url: `http://127.0.0.1:${port}/mcp`, optional: true }) }, log);
    expect(hub.tools()).toEqual([]);
    expect(log.lines.filter((l) => l.level === "warn").map((l) => l.fields?.server)).toEqual(["late"]);
    await everythingHttp("streamableHttp", port);
    await waitFor("late's tools offered", () => hub.tools().some((t) => t.name === "mcp_late_echo"), 20_000);
    expect(hub.status()).toEqual([{ name: "late", state: "up", tools: hub.tools().length }]);
  });

  test("legacy SSE (type: sse): echo answers", async () => {
    const { port } = await everythingHttp("sse");
    const hub = await start({ old: server({ type: "sse", url: `http://127.0.0.1:${port}/sse` }) });
    expect(await tool(hub, "mcp_old_echo").execute({ message: "sse" }, ctx())).toEqual({ content: "Echo: sse", isError: false });
  });
});

test("server-filesystem reads a file the test wrote, and refuses one outside its allowed dir", async () => {
  const allowed = mkdtempSync(join(dir, "fs-"));
  writeFileSync(join(allowed, "note.txt"), "the swarm remembers\n");
  const hub = await start({ files: server({ command: BUN, args: [FILESYSTEM, allowed] }) });
  const read = tool(hub, "mcp_files_read_text_file");
  expect(read.replaySafe).toBe(true);
  expect(await read.execute({ path: join(allowed, "note.txt") }, ctx())).toEqual({ content: "the swarm remembers\n", isError: false });
  const outside = await read.execute({ path: "/etc/hostname" }, ctx());
  expect(outside.isError).toBe(true);
  expect(outside.content).toMatch(/denied|outside/i);
});

describe("a server that cannot start", () => {
  test("required: start-up stops with one line naming it, and what did start is stopped", async () => {
    const counterFile = join(dir, "required-fail.count");
    const servers = {
      counter: server({ command: BUN, args: [COUNTER, counterFile] }),
      ghost: server({ command: "/nonexistent/mcp-ghost", args: ["--stdio"] }),
    };
    const err = await startMcpServers(servers, { log: captureLog(), workspace: dir }).then(
      () => new Error("started"),
      (e: Error) => e,
    );
    expect(err.message).toBe('MCP server "ghost" failed to start: command not found: /nonexistent/mcp-ghost');
    expect(pidsWith(counterFile)).toEqual([]);
  });

  test("a process that dies at start: its stderr says why", async () => {
    const err = await startMcpServers(
      { broken: server({ command: BUN, args: [join(dir, "no-such-server.js")] }) },
      { log: captureLog(), workspace: dir },
    ).then(
      () => new Error("started"),
      (e: Error) => e,
    );
    expect(err.message).toStartWith('MCP server "broken" failed to start: ');
    expect(err.message).toContain("no-such-server.js");
    expect(err.message).not.toContain("\n");
  });

  test("optional: the node starts without it and one warn line names it", async () => {
    const log = captureLog();
    const hub = await start(
      {
        everything: server({ command: BUN, args: [EVERYTHING, "stdio"] }),
        ghost: server({ command: "/nonexistent/mcp-ghost", optional: true }),
      },
      log,
    );
    expect(hub.tools().some((t) => t.name.startsWith("mcp_ghost_"))).toBe(false);
    expect(hub.tools().some((t) => t.name === "mcp_everything_echo")).toBe(true);
    expect(hub.status()).toContainEqual({ name: "ghost", state: "down", tools: 0 });
    const warns = log.lines.filter((l) => l.level === "warn");
    expect(warns).toHaveLength(1);
    expect(warns[0]!.fields).toMatchObject({ server: "ghost", reason: "command not found: /nonexistent/mcp-ghost" });
  });
});

describe("the counter fixture", () => {
  test("a crashed server's tools vanish, come back after a restart, and increment works again", async () => {
    const counterFile = join(dir, "crash.count");
    const log = captureLog();
    const hub = await start({ counter: server({ command: BUN, args: [COUNTER, counterFile] }) }, log);
    const increment = tool(hub, "mcp_counter_increment");
    expect(increment.replaySafe).toBe(false);
    expect(tool(hub, "mcp_counter_count").replaySafe).toBe(true);
    expect(await increment.execute({ label: "a" }, ctx())).toEqual({ content: "counted a (call #1)", isError: false });
    const [firstPid] = pidsWith(counterFile);

    await expect(tool(hub, "mcp_counter_crash").execute({}, ctx())).rejects.toThrow(/exited during the call/);
    expect(hub.tools().filter((t) => t.name.startsWith("mcp_counter_"))).toEqual([]);
    expect(hub.status()).toEqual([{ name: "counter", state: "down", tools: 0 }]);
    await expect(increment.execute({ label: "lost" }, ctx())).rejects.toThrow("MCP server counter is not running (restarting)");
    expect(log.lines).toContainEqual(expect.objectContaining({ level: "warn", fields: expect.objectContaining({ server: "counter" }) }));

    await waitFor("the counter's tools back", () => hub.tools().some((t) => t.name === "mcp_counter_increment"), 10_000);
    expect(await tool(hub, "mcp_counter_increment").execute({ label: "b" }, ctx())).toEqual({
      content: "counted b (call #2)",
      isError: false,
    });
    expect(await tool(hub, "mcp_counter_count").execute({}, ctx())).toEqual({ content: "2", isError: false });
    expect(pidsWith(counterFile)).not.toContain(firstPid!);
  });

  test("a slow call ends at the call bound, or when the sub-task's signal is aborted", async () => {
    const counterFile = join(dir, "slow.count");
    const hub = await start({ counter: server({ command: BUN, args: [COUNTER, counterFile] }) }, captureLog(), { callTimeoutMs: 300 });
    const registry = createRegistry([], () => hub.tools());
    const slow = await runTool(registry, "mcp_counter_increment", '{"label": "slow", "delay_ms": 5000}', { ...ctx(), maxBytes: 4096 });
    expect(slow).toMatchObject({ outcome: "timeout", isError: true });
    expect(slow.content).toContain("no answer from MCP server counter within 300 ms");

    const stop = new AbortController();
    const call = runTool(registry, "mcp_counter_increment", '{"label": "stopped", "delay_ms": 5000}', {
      signal: stop.signal,
      maxBytes: 4096,
    });
    stop.abort(new Error("sub-task deadline"));
    expect(await call).toMatchObject({
      outcome: "timeout",
      isError: true,
      content: "error: mcp_counter_increment was stopped (sub-task deadline)",
    });
  });

  test("close() during a restart leaves no process and restarts nothing", async () => {
    const counterFile = join(dir, "close-restart.count");
    const hub = await start({ counter: server({ command: BUN, args: [COUNTER, counterFile] }) }, captureLog(), {
      backoff: { baseMs: 1, capMs: 1 },
    });
    await expect(tool(hub, "mcp_counter_crash").execute({}, ctx())).rejects.toThrow(/exited/);
    await waitFor("a restart under way", () => pidsWith(counterFile).length > 0, 5_000);
    await hub.close();
    expect(pidsWith(counterFile)).toEqual([]);
    expect(hub.status()).toEqual([{ name: "counter", state: "down", tools: 0 }]);
  });

  test("close() leaves no server process running", async () => {
    const counterFile = join(dir, "close.count");
    const marker = join(dir, "close-marker");
    const hub = await start({
      counter: server({ command: BUN, args: [COUNTER, counterFile] }),
      everything: server({ command: BUN, args: [EVERYTHING, "stdio", marker] }),
    });
    const pids = [...pidsWith(counterFile), ...pidsWith(marker)];
    expect(pids).toHaveLength(2);
    await hub.close();
    expect(pids.filter(alive)).toEqual([]);
    expect(hub.tools()).toEqual([]);
  });
});

test("tool names stay within 64 characters, unique and the same on every node", () => {
  const long = "s".repeat(64);
  const names = toolNames([
    [long, "read"],
    [long, "write"],
    ["fs", "a.b"],
    ["fs", "a_b"],
    ["fs", "echo"],
  ]);
  expect(names.every((n) => n.length <= 64 && /^[A-Za-z0-9_-]+$/.test(n))).toBe(true);
  expect(new Set(names).size).toBe(names.length);
  expect(names[4]).toBe("mcp_fs_echo");
  expect(toolNames([[long, "read"]])).toEqual([names[0]!]);
});
