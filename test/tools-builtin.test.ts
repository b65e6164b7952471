// A node's built-in tools on the real file system, real processes and a real HTTP server: the file
// tools inside a workspace they cannot leave, exec (its working directory, exit code, timeout killing
// every process it started, cut output, deny patterns, an environment without the node's secrets,
// bubblewrap), web_fetch refusing internal addresses before any packet is sent, and runTool's errors.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../lib/config.ts";
import { createSandbox, type Sandbox } from "../roles/worker/sandbox.ts";
import { builtinTools } from "../roles/worker/tools/builtin.ts";
import { type ExecOptions, execTool, isolationAvailable } from "../roles/worker/tools/exec.ts";
import { fileTools } from "../roles/worker/tools/fs.ts";
import { createRegistry, runTool, type Tool, type ToolRun } from "../roles/worker/tools/index.ts";
import { internalKind, webFetchTool } from "../roles/worker/tools/web.ts";
import { waitFor } from "./helpers/wait.ts";

const dirs: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `picoclaw-${prefix}-`));
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** One call the way the agent loop makes it: JSON text in, a result that never throws out. */
async function call(
  tools: Tool[],
  name: string,
  args: Record<string, unknown> | string,
  signal = new AbortController().signal,
): Promise<ToolRun> {
  const raw = typeof args === "string" ? args : JSON.stringify(args);
  return runTool(createRegistry(tools), name, raw, { signal, maxBytes: 256 * 1024 });
}

function sandboxIn(extra: Partial<Parameters<typeof createSandbox>[0]> = {}): Sandbox {
  return createSandbox({ workspace: join(tempDir("ws"), "workspace"), restrict: true, ...extra });
}

/** A process that exists and is not a zombie (a killed child nobody reaped yet counts as gone). */
function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Pids of running processes whose command line is exactly `argv`. */
function pidsOf(argv: string[]): number[] {
  const want = `${argv.join("\0")}\0`;
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, "utf8") === want;
      } catch {
        return false;
      }
    })
    .map(Number)
    .filter(isRunning);
}

describe("file tools", () => {
  test("write, read, edit, append and list inside the workspace", async () => {
    const sb = sandboxIn();
    const tools = fileTools(sb);
    expect(tools.map((t) => t.name)).toEqual(["read_file", "write_file", "edit_file", "append_file", "list_dir"]);
    for (const t of tools) expect((t.parameters as { required: string[] }).required.length).toBeGreaterThan(0);

    expect((await call(tools, "write_file", { path: "notes/a.txt", content: "one two\n" })).isError).toBe(false);
    expect(readFileSync(join(sb.workspace, "notes/a.txt"), "utf8")).toBe("one two\n");
    expect((await call(tools, "edit_file", { path: "notes/a.txt", old_text: "two", new_text: "2" })).isError).toBe(false);
    expect((await call(tools, "append_file", { path: "notes/a.txt", content: "three\n" })).isError).toBe(false);
    const read = await call(tools, "read_file", { path: "notes/a.txt" });
    expect(read).toMatchObject({ outcome: "ok", content: "one 2\nthree\n" });

    writeFileSync(join(sb.workspace, "b.txt"), "");
    const list = await call(tools, "list_dir", { path: "." });
    expect(list.content).toBe("b.txt\nnotes/");
  });

  test("edit_file needs old_text exactly once; a missing file is named", async () => {
    const sb = sandboxIn();
    const tools = fileTools(sb);
    writeFileSync(join(sb.workspace, "t.txt"), "x x x");
    const twice = await call(tools, "edit_file", { path: "t.txt", old_text: "x", new_text: "y" });
    expect(twice.isError).toBe(true);
    expect(twice.content).toContain("occurs 3 times");
    const none = await call(tools, "edit_file", { path: "t.txt", old_text: "z", new_text: "y" });
    expect(none.content).toContain("does not occur");
    expect(readFileSync(join(sb.workspace, "t.txt"), "utf8")).toBe("x x x");
    const missing = await call(tools, "read_file", { path: "nope.txt" });
    expect(missing).toMatchObject({ isError: true, outcome: "error" });
    expect(missing.content).toContain("no such file: nope.txt");
  });

  test("../x, an absolute path outside and a symlink leading outside are refused, naming the path", async () => {
    const sb = sandboxIn();
    const tools = fileTools(sb);
    const outside = tempDir("outside");
    writeFileSync(join(outside, "secret.txt"), "top secret");
    symlinkSync(outside, join(sb.workspace, "link"));
    symlinkSync(join(outside, "planted.txt"), join(sb.workspace, "dangling"));

    const attempts: [string, Record<string, unknown>, string][] = [
      ["read_file", { path: "../x" }, "../x"],
      ["read_file", { path: join(outside, "secret.txt") }, join(outside, "secret.txt")],
      ["read_file", { path: "link/secret.txt" }, "link/secret.txt"],
      ["list_dir", { path: "link" }, "link"],
      ["write_file", { path: "link/new.txt", content: "x" }, "link/new.txt"],
      ["write_file", { path: "dangling", content: "x" }, "dangling"],
    ];
    for (const [name, args, path] of attempts) {
      const r = await call(tools, name, args);
      expect(r).toMatchObject({ isError: true, outcome: "refused" });
      expect(r.content).toContain(`"${path}" is outside the workspace`);
    }
    expect(existsSync(join(outside, "new.txt"))).toBe(false);
    expect(existsSync(join(outside, "planted.txt"))).toBe(false);
  });

  test("allow_read_paths lets a read through but not a write; restrict off lets both", async () => {
    const outside = tempDir("shared");
    writeFileSync(join(outside, "doc.txt"), "shared doc");
    const tools = fileTools(sandboxIn({ readPaths: [outside] }));
    expect(await call(tools, "read_file", { path: join(outside, "doc.txt") })).toMatchObject({ outcome: "ok", content: "shared doc" });
    const write = await call(tools, "write_file", { path: join(outside, "doc.txt"), content: "changed" });
    expect(write.outcome).toBe("refused");
    expect(write.content).toContain("tools.allow_write_paths");
    expect(readFileSync(join(outside, "doc.txt"), "utf8")).toBe("shared doc");

    const open = fileTools(sandboxIn({ restrict: false }));
    expect((await call(open, "write_file", { path: join(outside, "doc.txt"), content: "changed" })).outcome).toBe("ok");
    expect(readFileSync(join(outside, "doc.txt"), "utf8")).toBe("changed");
  });
});

function execIn(sb: Sandbox, o: Partial<ExecOptions> = {}): Tool[] {
  return [execTool({ sandbox: sb, timeoutMs: 10_000, maxOutputBytes: 64 * 1024, ...o })];
}

describe("exec", () => {
  test("runs in the workspace (or a working_dir inside it) and reports the exit code", async () => {
    const sb = sandboxIn();
    mkdirSync(join(sb.workspace, "sub"));
    const tools = execIn(sb);
    expect(await call(tools, "exec", { command: "pwd" })).toMatchObject({ outcome: "ok", content: `${sb.workspace}\nexit code: 0` });
    expect((await call(tools, "exec", { command: "pwd", working_dir: "sub" })).content).toStartWith(join(sb.workspace, "sub"));
    const failed = await call(tools, "exec", { command: "echo out; echo err >&2; exit 3" });
    expect(failed.isError).toBe(true);
    expect(failed.content).toContain("out\n");
    expect(failed.content).toContain("err\n");
    expect(failed.content).toEndWith("exit code: 3");
    const outside = await call(tools, "exec", { command: "pwd", working_dir: ".." });
    expect(outside.outcome).toBe("refused");
    expect((await call(tools, "exec", { command: "pwd", working_dir: "missing" })).content).toContain(
      'working_dir "missing" is not a directory',
    );
  });

  test("a timeout kills the whole process group, background jobs too", async () => {
    const sb = sandboxIn();
    const started = Date.now();
    const r = await call(execIn(sb, { timeoutMs: 1_000 }), "exec", { command: "sleep 30 & echo $! > pid; sleep 30; echo never" });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(r.outcome).toBe("timeout");
    expect(r.content).toContain("timed out after 1 s");
    expect(r.content).not.toContain("never");
    const pid = Number(readFileSync(join(sb.workspace, "pid"), "utf8"));
    expect(pid).toBeGreaterThan(0);
    await waitFor(`background sleep ${pid} to be gone`, () => !isRunning(pid), 5_000);
  });

  test("the sub-task's abort stops the command and its group", async () => {
    const sb = sandboxIn();
    const ac = new AbortController();
    const run = call(execIn(sb), "exec", { command: "sleep 30 & echo $! > pid; sleep 30" }, ac.signal);
    const pid = await waitFor("the pid file", () => Number(readFileSync(join(sb.workspace, "pid"), "utf8").trim()), 5_000);
    ac.abort(new Error("sub-task deadline"));
    const r = await run;
    expect(r.isError).toBe(true);
    expect(r.content).toContain("sub-task deadline");
    await waitFor(`background sleep ${pid} to be gone`, () => !isRunning(pid), 5_000);
  });

  test("output over the cap is cut and the cut said; the exit code stays", async () => {
    const r = await call(execIn(sandboxIn(), { maxOutputBytes: 1_024 }), "exec", { command: "seq 1 100000" });
    expect(r.content).toStartWith("1\n2\n3\n");
    expect(r.content).toMatch(/\[output cut: \d+ more bytes of 588895 not shown\]/);
    expect(r.content).toEndWith("exit code: 0");
    expect(r.content.length).toBeLessThan(1_200);
  });

  test("deny patterns refuse destructive commands, custom ones too; off, they let all through", async () => {
    const sb = sandboxIn();
    const victim = join(tempDir("victim"), "x");
    mkdirSync(victim);
    const tools = execIn(sb, { customDenyPatterns: ["\\bforbidden\\b"] });
    for (const command of [`rm -rf ${victim}`, `rm -r -f ${victim}`, "echo forbidden", "sudo true", "curl x | sh", "echo $(id)"]) {
      const r = await call(tools, "exec", { command });
      expect(r.outcome).toBe("refused");
      expect(r.content).toContain("command refused: matches deny pattern");
    }
    expect(existsSync(victim)).toBe(true);
    expect((await call(tools, "exec", { command: "echo fine" })).content).toBe("fine\nexit code: 0");
    const open = execIn(sb, { denyPatterns: false, customDenyPatterns: ["\\bforbidden\\b"] });
    expect((await call(open, "exec", { command: `echo \${HOME} forbidden` })).content).toBe(`${sb.workspace} forbidden\nexit code: 0`);
    expect(() => execIn(sb, { customDenyPatterns: ["(unclosed"] })).toThrow("tools.exec.custom_deny_patterns");
  });

  test("the command's environment holds none of the node's secrets", async () => {
    const sb = sandboxIn();
    const secrets = {
      PICOCLAW_TEST_SECRET: "pc-s3cret",
      OPENAI_API_KEY: "sk-s3cret",
      NATS_TOKEN: "nats-s3cret",
      MY_DB_PASSWORD: "db-s3cret",
    };
    Object.assign(process.env, secrets);
    try {
      const r = await call(execIn(sb), "exec", { command: "env" });
      expect(r.outcome).toBe("ok");
      for (const [k, v] of Object.entries(secrets)) {
        expect(r.content).not.toContain(k);
        expect(r.content).not.toContain(v);
      }
      expect(r.content).not.toMatch(/^(PICOCLAW|NATS|OPENAI)_/m);
      expect(r.content).toContain(`HOME=${sb.workspace}\n`);
      expect(r.content).toContain("TERM=dumb\n");
    } finally {
      for (const k of Object.keys(secrets)) delete process.env[k];
    }
  });
});

const bwrap = Bun.which("bwrap");

describe("exec with isolation (bubblewrap)", () => {
  if (process.env.CI === "true") test("bwrap is installed on CI", () => expect(bwrap).toBeTruthy());

  test.skipIf(!bwrap)("a file outside the workspace is out of reach; the workspace is writable", async () => {
    expect(isolationAvailable()).toBe(true);
    const sb = sandboxIn();
    const outside = tempDir("host");
    writeFileSync(join(outside, "host-secret.txt"), "host secret");
    const command = `cat ${join(outside, "host-secret.txt")}`;
    // Without isolation the same command reads it: the file is there to be read.
    expect((await call(execIn(sb), "exec", { command })).content).toContain("host secret");

    const isolated = execIn(sb, { isolation: true });
    const r = await call(isolated, "exec", { command });
    expect(r.isError).toBe(true);
    expect(r.content).not.toContain("host secret");
    expect(r.content).toContain("No such file");
    const w = await call(isolated, "exec", { command: "echo made > made.txt && cat made.txt && pwd" });
    expect(w.content).toBe(`made\n${sb.workspace}\nexit code: 0`);
    expect(readFileSync(join(sb.workspace, "made.txt"), "utf8")).toBe("made\n");
    expect((await call(isolated, "exec", { command: "touch /usr/picoclaw-test" })).isError).toBe(true);
  });

  test.skipIf(!bwrap)("no network: a server on the host's loopback is not reached", async () => {
    const client = Bun.which("curl") ? "curl -s -m 3" : Bun.which("wget") ? "wget -q -O - -T 3" : undefined;
    if (!client) return; // neither curl nor wget: the outside-file test above still runs
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("reached") });
    try {
      const command = `${client} http://127.0.0.1:${server.port}/`;
      const sb = sandboxIn();
      expect((await call(execIn(sb), "exec", { command })).content).toContain("reached");
      const r = await call(execIn(sb, { isolation: true }), "exec", { command });
      expect(r.isError).toBe(true);
      expect(r.content).not.toContain("reached");
    } finally {
      server.stop(true);
    }
  });

  test.skipIf(!bwrap)("a timeout kills what runs inside the sandbox", async () => {
    const marker = ["sleep", "29.4321"];
    const r = await call(execIn(sandboxIn(), { isolation: true, timeoutMs: 1_000 }), "exec", {
      command: `${marker.join(" ")} & ${marker.join(" ")}`,
    });
    expect(r.outcome).toBe("timeout");
    await waitFor("the sandboxed sleeps to be gone", () => pidsOf(marker).length === 0, 5_000);
  });

  test("isolation without bwrap on the PATH stops start-up naming the package", () => {
    const path = process.env.PATH;
    process.env.PATH = tempDir("empty-path");
    try {
      expect(() => execIn(sandboxIn(), { isolation: true })).toThrow("bwrap (bubblewrap) is not installed: apt-get install bubblewrap");
    } finally {
      process.env.PATH = path;
    }
  });
});

describe("web_fetch", () => {
  let hits = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      hits++;
      const path = new URL(req.url).pathname;
      if (path === "/to-metadata") return Response.redirect("http://169.254.169.254/latest/meta-data/", 302);
      if (path === "/to-page") return Response.redirect("/page", 302);
      if (path === "/hang") return new Promise<Response>(() => {});
      if (path === "/big") return new Response("y".repeat(10_000), { headers: { "content-type": "text/plain" } });
      const html = "<html><head><style>p{}</style><script>evil()</script></head><body><p>Hello <b>swarm</b> &amp; co</p></body></html>";
      return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
    },
  });
  afterAll(() => server.stop(true));
  const local = `127.0.0.1:${server.port}`;
  const fetchTool = (allowHosts: string[] = [], maxBytes = 64 * 1024) => [webFetchTool({ allowHosts, maxBytes, timeoutMs: 5_000 })];

  test("loopback is refused before any request is sent, by address or by name", async () => {
    for (const url of [`http://${local}/page`, `http://localhost:${server.port}/page`, `http://[::ffff:127.0.0.1]:${server.port}/page`]) {
      const r = await call(fetchTool(), "web_fetch", { url });
      expect(r).toMatchObject({ isError: true, outcome: "refused" });
      expect(r.content).toContain("loopback");
    }
    expect(hits).toBe(0);
  });

  test("an allow-listed host is fetched, HTML reduced to its text; a large body is cut", async () => {
    for (const allow of [local, "127.0.0.1"]) {
      const r = await call(fetchTool([allow]), "web_fetch", { url: `http://${local}/page` });
      expect(r.outcome).toBe("ok");
      expect(r.content).toStartWith("HTTP 200");
      expect(r.content).toContain("content-type: text/html");
      expect(r.content).toContain("Hello swarm & co");
      expect(r.content).not.toContain("<b>");
      expect(r.content).not.toContain("evil");
    }
    const big = await call(fetchTool([local], 1_024), "web_fetch", { url: `http://${local}/big` });
    expect(big.content).toContain(`${"y".repeat(1_024)}\n[body cut: only the first 1024 bytes were read]`);
    const redirected = await call(fetchTool([local]), "web_fetch", { url: `http://${local}/to-page` });
    expect(redirected.content).toContain(`url: http://${local}/page`);
  });

  test("metadata and private addresses are refused at once, a redirect to one too", async () => {
    for (const [url, kind] of [
      ["http://169.254.169.254/latest/meta-data/", "link-local"],
      ["http://10.0.0.1/", "private"],
      ["http://[fd00::1]/", "private"],
      ["http://100.64.0.1/", "CGNAT"],
      ["http://0.0.0.0/", "unspecified"],
    ]) {
      const started = Date.now();
      const r = await call(fetchTool(), "web_fetch", { url });
      expect(r.outcome).toBe("refused");
      expect(r.content).toContain(kind!);
      // A connection attempt to an unrouted address would hang until the timeout.
      expect(Date.now() - started).toBeLessThan(1_000);
    }
    const hop = await call(fetchTool([local]), "web_fetch", { url: `http://${local}/to-metadata` });
    expect(hop.outcome).toBe("refused");
    expect(hop.content).toContain("169.254.169.254 is a link-local address");
    expect((await call(fetchTool(), "web_fetch", { url: "file:///etc/passwd" })).outcome).toBe("refused");
  });

  test("a server that does not answer runs into the timeout", async () => {
    const tools = [webFetchTool({ allowHosts: [local], maxBytes: 1_024, timeoutMs: 300 })];
    const r = await call(tools, "web_fetch", { url: `http://${local}/hang` });
    expect(r.outcome).toBe("timeout");
    expect(r.content).toContain("no answer within 0.3 s");
  });

  test("addresses are judged by the IPv4 they carry", () => {
    const kinds = {
      "8.8.8.8": undefined,
      "2606:4700::1111": undefined,
      "127.1.2.3": "loopback",
      "::1": "loopback",
      "::ffff:10.1.2.3": "private",
      "::ffff:7f00:1": "loopback",
      "64:ff9b::a9fe:a9fe": "link-local",
      "2002:c0a8:0101::1": "private",
      "fe80::1%eth0": "link-local",
      "172.31.255.255": "private",
      "172.32.0.1": undefined,
      "100.127.0.1": "shared (CGNAT)",
      "::": "unspecified",
    };
    for (const [address, kind] of Object.entries(kinds)) expect([address, internalKind(address)]).toEqual([address, kind]);
  });
});

describe("runTool", () => {
  test("an unknown tool and arguments that are not a JSON object are results, not throws", async () => {
    const tools = fileTools(sandboxIn());
    const unknown = await call(tools, "rm_everything", {});
    expect(unknown).toMatchObject({ isError: true, outcome: "unknown_tool" });
    expect(unknown.content).toContain("read_file");
    for (const raw of ['{"path": ', "[1, 2]", '"x"']) {
      expect(await call(tools, "read_file", raw)).toMatchObject({ isError: true, outcome: "bad_arguments" });
    }
    const wrongType = await call(tools, "read_file", { path: 42 });
    expect(wrongType).toMatchObject({ outcome: "bad_arguments", content: 'error: argument "path" must be a string' });
  });
});

describe("builtinTools", () => {
  test("from the config: the workspace under the home (0700), file tools on, exec and web_fetch off by default", () => {
    const home = tempDir("home");
    const { config } = loadConfig({ flags: {}, env: {}, home });
    const { tools, sandbox } = builtinTools(config, "node-1", home);
    expect(sandbox.workspace).toBe(join(home, ".picoclaw", "workspace", "node-1"));
    expect(statSync(sandbox.workspace).mode & 0o777).toBe(0o700);
    expect(tools.map((t) => t.name).sort()).toEqual(["append_file", "edit_file", "list_dir", "read_file", "write_file"]);
  });

  test("switches and a ~ workspace are honoured", () => {
    const home = tempDir("home");
    const flags = {
      "agents.defaults.workspace": "~/ws",
      "tools.exec.enabled": true,
      "tools.web.fetch.enabled": true,
      "tools.files.enabled": false,
    };
    const { config } = loadConfig({ flags, env: {}, home });
    const { tools, sandbox } = builtinTools(config, "node-1", home);
    expect(sandbox.workspace).toBe(join(home, "ws"));
    expect(tools.map((t) => t.name).sort()).toEqual(["exec", "web_fetch"]);
    expect(tools.find((t) => t.name === "exec")?.replaySafe).toBe(false);
    expect(tools.find((t) => t.name === "web_fetch")?.replaySafe).toBe(true);
  });
});
