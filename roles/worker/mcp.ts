// MCP servers as tools of a worker node (PicoClaw's `tools.mcp.servers`): each enabled server is started
// (stdio) or reached (streamable HTTP, legacy SSE) with the official SDK's client, and each of its tools
// is offered as `mcp_<server>_<tool>`. A server that goes away is restarted with backoff; meanwhile its
// tools are not offered, and a call already on its way is told the server is restarting.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { getDefaultEnvironment, StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode, McpError, type Tool as McpTool } from "@modelcontextprotocol/sdk/types.js";
import type { Config } from "../../lib/config.ts";
import type { Logger } from "../../lib/log.ts";
import { type Backoff, backoffDelay } from "../../lib/retry.ts";
import { type JsonSchema, type Tool, type ToolContext, ToolError, type ToolResult } from "./tools/index.ts";

export type McpServersConfig = Config["tools"]["mcp"]["servers"];
export type McpServerConfig = McpServersConfig[string];

export interface McpOptions {
  log: Logger;
  /** A stdio server's working directory when its `cwd` is not set. */
  workspace: string;
  /** Wraps a stdio server's argv (command + args), e.g. in bubblewrap. */
  isolation?: (argv: string[]) => string[];
  /** Bound of connect + tools/list, at start and at each restart. */
  startTimeoutMs?: number;
  /** Bound of one tool call; the sub-task's signal can end it sooner. */
  callTimeoutMs?: number;
  /** Delays between restarts. */
  backoff?: Backoff;
}

export interface McpServerStatus {
  name: string;
  state: "up" | "down";
  tools: number;
}

export interface McpHub {
  /** The tools of the servers that are up now, sorted by name. */
  tools(): Tool[];
  status(): McpServerStatus[];
  /** Stops restarts and closes every client; spawned servers are gone when it resolves. */
  close(): Promise<void>;
}

const START_TIMEOUT_MS = 10_000;
const CALL_TIMEOUT_MS = 300_000;
/** 0.5 s, 1 s, 2 s, ... up to 30 s: a crashing server is not respawned in a tight loop. */
const MCP_BACKOFF: Backoff = { baseMs: 500, capMs: 30_000 };
/** A server up this long has recovered: its next restart starts the backoff over. */
const STABLE_MS = 30_000;
/** Tool names as chat APIs take them. */
const MAX_NAME = 64;
const CLIENT_INFO = { name: "picoclaw-swarm-worker", version: "0.1.0" };

/**
 * Starts every enabled server. A server that fails at start rejects the whole start (one line naming it),
 * unless it is `optional`: then one warn line, and it is retried in the background.
 */
export async function startMcpServers(servers: McpServersConfig, opts: McpOptions): Promise<McpHub> {
  let cache: Tool[] | undefined;
  const changed = () => {
    cache = undefined;
  };
  const slots = Object.entries(servers)
    .filter(([, cfg]) => cfg.enabled)
    .map(([name, cfg]) => new ServerSlot(name, cfg, opts, changed));
  const failures = await Promise.all(slots.map((s) => s.start()));
  const fatal = slots.findIndex((s, i) => failures[i] !== undefined && !s.cfg.optional);
  if (fatal >= 0) {
    await Promise.all(slots.map((s) => s.close()));
    throw new Error(`MCP server "${slots[fatal]!.name}" failed to start: ${failures[fatal]}`);
  }
  return {
    tools: () => {
      cache ??= adapters(slots, opts.callTimeoutMs ?? CALL_TIMEOUT_MS);
      return cache;
    },
    status: () => slots.map((s) => ({ name: s.name, state: s.client ? "up" : "down", tools: s.tools.length })),
    close: async () => {
      await Promise.all(slots.map((s) => s.close()));
    },
  };
}

/** A connected server: its client, its tools, and its process when it is one. */
interface Connection {
  client: Client;
  tools: McpTool[];
  pid?: number;
  stderr: StderrTail;
}

/** One configured server through its lifetime: up, down and being restarted, closed. */
class ServerSlot {
  client?: Client;
  tools: McpTool[] = [];
  private pid?: number;
  private stopped = false;
  private failures = 0;
  private upSince = 0;
  private timer?: ReturnType<typeof setTimeout>;
  private connecting?: Promise<void>;
  private stderr?: StderrTail;
  /** Ends a connect under way when the hub closes. */
  private readonly closing = new AbortController();

  constructor(
    readonly name: string,
    readonly cfg: McpServerConfig,
    private readonly opts: McpOptions,
    private readonly changed: () => void,
  ) {}

  /** The first attempt: undefined when up, else why not (an optional server is then retried). */
  async start(): Promise<string | undefined> {
    const started = performance.now();
    try {
      await this.attempt();
      this.opts.log.info("MCP server up", { server: this.name, tools: this.tools.length, ms: Math.round(performance.now() - started) });
      return undefined;
    } catch (err) {
      const reason = oneLine((err as Error).message);
      if (this.cfg.optional) {
        const delay = this.nextDelay();
        this.opts.log.warn("optional MCP server failed to start; going on without it", { server: this.name, reason, retry_in_ms: delay });
        this.retryIn(delay);
      }
      return reason;
    }
  }

  /** The connection was lost (the process exited, the server stopped answering): restart it later. */
  lost(client: Client, reason: string): void {
    if (this.client !== client) return; // an old client, or one being closed
    this.client = undefined;
    this.tools = [];
    this.changed();
    void closeConnection({ client, pid: this.pid });
    if (this.stopped) return;
    if (Date.now() - this.upSince >= STABLE_MS) this.failures = 0;
    const delay = this.nextDelay();
    this.opts.log.warn("MCP server down; restarting", { server: this.name, reason, stderr: this.stderr?.reason(), retry_in_ms: delay });
    this.retryIn(delay);
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.closing.abort(new Error("the node is closing its MCP servers"));
    await this.connecting?.catch(() => {}); // a restart under way ends closed (see attempt)
    const client = this.client;
    this.client = undefined;
    this.tools = [];
    this.changed();
    if (client) await closeConnection({ client, pid: this.pid });
  }

  private attempt(): Promise<void> {
    const run = async () => {
      const conn = await connect(this.name, this.cfg, this.opts, {
        onClose: (client) => this.lost(client, "exited"),
        onTools: (client, tools) => this.toolsChanged(client, tools),
        closing: this.closing.signal,
      });
      if (this.stopped) return closeConnection(conn);
      this.client = conn.client;
      this.tools = conn.tools;
      this.pid = conn.pid;
      this.stderr = conn.stderr;
      this.upSince = Date.now();
      this.changed();
    };
    this.connecting = run().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** The server said its tools changed (tools/list_changed); the SDK listed them again. */
  private toolsChanged(client: Client, tools: McpTool[]): void {
    if (this.client !== client) return;
    this.tools = tools;
    this.changed();
    this.opts.log.info("MCP server tools changed", { server: this.name, tools: tools.length });
  }

  private retryIn(delay: number): void {
    this.timer = setTimeout(async () => {
      try {
        await this.attempt();
        if (this.client) this.opts.log.info("MCP server up again", { server: this.name, tools: this.tools.length });
      } catch (err) {
        if (this.stopped) return;
        const next = this.nextDelay();
        this.opts.log.debug("MCP server restart failed", { server: this.name, reason: oneLine((err as Error).message), retry_in_ms: next });
        this.retryIn(next);
      }
    }, delay);
  }

  private nextDelay(): number {
    this.failures++;
    return backoffDelay(this.failures, this.opts.backoff ?? MCP_BACKOFF);
  }

  /** Calls one tool of this server; a server that is down is a ToolError, not a wait. */
  async call(tool: string, args: Record<string, unknown>, ctx: ToolContext, timeout: number): Promise<ToolResult> {
    const client = this.client;
    if (!client) throw new ToolError(`MCP server ${this.name} is not running (restarting)`);
    try {
      const result = await client.callTool({ name: tool, arguments: args }, undefined, { signal: ctx.signal, timeout });
      return { content: resultText(result), isError: result.isError === true };
    } catch (err) {
      throw this.callError(err, client, ctx, timeout);
    }
  }

  private callError(err: unknown, client: Client, ctx: ToolContext, timeout: number): unknown {
    if (ctx.signal.aborted) return err; // runTool says the call was stopped, and why
    if (err instanceof McpError) {
      if (err.code === ErrorCode.RequestTimeout)
        return new ToolError(`no answer from MCP server ${this.name} within ${timeout} ms`, "timeout");
      if (err.code === ErrorCode.ConnectionClosed) return new ToolError(`MCP server ${this.name} exited during the call (restarting)`);
      if (err.code === ErrorCode.InvalidParams) return new ToolError(err.message, "bad_arguments");
      return new ToolError(err.message);
    }
    // Not an answer of the server: over HTTP the server is unreachable or lost our session; reconnect.
    const reason = oneLine(err instanceof Error ? err.message : String(err));
    if (this.cfg.url) this.lost(client, `unreachable: ${reason}`);
    return new ToolError(`MCP server ${this.name}: ${reason}`);
  }
}

interface ConnectionHooks {
  onClose(client: Client): void;
  onTools(client: Client, tools: McpTool[]): void;
  closing: AbortSignal;
}

/** Connects and lists the tools within the start bound; on failure nothing is left running. */
async function connect(name: string, cfg: McpServerConfig, opts: McpOptions, hooks: ConnectionHooks): Promise<Connection> {
  if (hooks.closing.aborted) throw new Error(String(hooks.closing.reason));
  const argv = cfg.command ? argvOf(cfg, opts) : [];
  const stderr = new StderrTail((line) => opts.log.debug("MCP server stderr", { server: name, line }));
  const transport = transportFor(cfg, argv, opts, stderr);
  const client: Client = new Client(CLIENT_INFO, {
    listChanged: { tools: { onChanged: (err, tools) => !err && tools && hooks.onTools(client, tools) } },
  });
  client.onclose = () => hooks.onClose(client);
  const ms = opts.startTimeoutMs ?? START_TIMEOUT_MS;
  const bound = new AbortController();
  const timer = setTimeout(() => bound.abort(new Error(`no answer to initialize and tools/list within ${ms} ms`)), ms);
  const close = () => bound.abort(hooks.closing.reason);
  hooks.closing.addEventListener("abort", close, { once: true });
  const req = { signal: bound.signal, timeout: ms };
  const connecting = client.connect(transport, req);
  // connect() spawns before its first wait: the pid is known even if the start fails.
  const pid = transport instanceof StdioClientTransport ? (transport.pid ?? undefined) : undefined;
  try {
    await connecting;
    // A server without tools (only resources or prompts) is up with none.
    const tools = client.getServerCapabilities()?.tools ? await listAllTools(client, req) : [];
    return { client, tools, pid, stderr };
  } catch (err) {
    await closeConnection({ client, pid }, true);
    throw new Error(bound.signal.aborted ? String(bound.signal.reason.message) : startFailure(err, cfg, argv, stderr));
  } finally {
    clearTimeout(timer);
    hooks.closing.removeEventListener("abort", close);
  }
}

/** A stdio server's argv, wrapped by the isolation when there is one. */
function argvOf(cfg: McpServerConfig, opts: McpOptions): string[] {
  const argv = [cfg.command!, ...cfg.args];
  return opts.isolation ? opts.isolation(argv) : argv;
}

function transportFor(cfg: McpServerConfig, argv: string[], opts: McpOptions, stderr: StderrTail): Transport {
  if (cfg.command) {
    if (cfg.type && cfg.type !== "stdio") throw new Error(`type ${cfg.type} needs a url, not a command`);
    const transport = new StdioClientTransport({
      command: argv[0]!,
      args: argv.slice(1),
      // Only the SDK's short list (PATH, HOME, ...): the node's own environment holds its secrets.
      env: { ...getDefaultEnvironment(), ...cfg.env },
      cwd: workingDir(cfg, opts),
      stderr: "pipe",
    });
    stderr.follow(transport);
    return transport;
  }
  if (!cfg.url) throw new Error("neither a command nor a url");
  if (cfg.type === "stdio") throw new Error("type stdio needs a command, not a url");
  const requestInit = { headers: cfg.headers };
  const url = new URL(cfg.url);
  return cfg.type === "sse" ? new SSEClientTransport(url, { requestInit }) : new StreamableHTTPClientTransport(url, { requestInit });
}

/** The server's cwd; the workspace (made when missing) by default. A missing cwd would read as a missing command. */
function workingDir(cfg: McpServerConfig, opts: McpOptions): string {
  if (!cfg.cwd) {
    mkdirSync(opts.workspace, { recursive: true });
    return opts.workspace;
  }
  if (!existsSync(cfg.cwd)) throw new Error(`working directory ${cfg.cwd} does not exist`);
  return cfg.cwd;
}

async function listAllTools(client: Client, req: { signal: AbortSignal; timeout: number }): Promise<McpTool[]> {
  const tools: McpTool[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listTools(cursor ? { cursor } : undefined, req);
    tools.push(...page.tools);
    cursor = page.nextCursor;
  } while (cursor);
  return tools;
}

/** Why a start failed, for a person: a missing command is named, a dying process shows its stderr. */
function startFailure(err: unknown, cfg: McpServerConfig, argv: string[], stderr: StderrTail): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === "ENOENT" && argv[0]) return `command not found: ${argv[0]}`;
  const closed = err instanceof McpError && err.code === ErrorCode.ConnectionClosed;
  let message = e instanceof Error ? e.message : String(err);
  if (closed) message = cfg.command ? "the process exited" : "the server closed the connection";
  else if (cfg.url) message = `cannot reach ${urlForLog(cfg.url)}: ${message}`;
  const said = stderr.reason();
  return oneLine(said ? `${message}: ${said}` : message);
}

/** A url without its query and credentials, which may hold tokens. */
function urlForLog(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

/**
 * Closes the client (the SDK ends a process with stdin EOF, then SIGTERM, then SIGKILL) and waits for
 * the process to be gone. `now`: a server that failed its start gets no grace.
 */
async function closeConnection({ client, pid }: Pick<Connection, "client" | "pid">, now = false): Promise<void> {
  client.onclose = undefined;
  if (now && pid !== undefined) signal(pid, "SIGTERM");
  const transport = client.transport;
  if (transport instanceof StreamableHTTPClientTransport && transport.sessionId) {
    await withBound(transport.terminateSession(), 1_000).catch(() => {});
  }
  await withBound(client.close(), 5_000).catch(() => {});
  if (pid === undefined || (await exited(pid, 2_000))) return;
  signal(pid, "SIGKILL");
  await exited(pid, 1_000);
}

async function exited(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > end) return false;
    await Bun.sleep(20);
  }
  return true;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function withBound<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The adapters of every server that is up, named uniquely, sorted. */
function adapters(slots: ServerSlot[], timeout: number): Tool[] {
  const entries = slots.flatMap((slot) => slot.tools.map((tool) => ({ slot, tool })));
  const names = toolNames(entries.map((e) => [e.slot.name, e.tool.name]));
  return entries
    .map(({ slot, tool }, i) => adapter(names[i]!, slot, tool, timeout))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function adapter(name: string, slot: ServerSlot, tool: McpTool, timeout: number): Tool {
  const a = tool.annotations;
  return {
    name,
    description: tool.description ?? tool.title ?? `${tool.name} of MCP server ${slot.name}`,
    parameters: parametersOf(tool),
    replaySafe: a?.readOnlyHint === true || a?.idempotentHint === true,
    execute: (args, ctx) => slot.call(tool.name, args, ctx, timeout),
  };
}

/** The tool's input schema as a function's parameters: always an object with properties, no `$schema`. */
function parametersOf(tool: McpTool): JsonSchema {
  const { $schema: _, ...schema } = tool.inputSchema as JsonSchema;
  return { ...schema, type: "object", properties: schema.properties ?? {} };
}

/**
 * `mcp_<server>_<tool>` with characters chat APIs refuse as `_`. A name too long, or the same as another's,
 * is cut and ends with a hash of server and tool: the same tool gets the same name on every node.
 */
export function toolNames(pairs: [server: string, tool: string][]): string[] {
  const base = pairs.map(([server, tool]) => `mcp_${server}_${tool.replace(/[^A-Za-z0-9_-]/g, "_")}`);
  const seen = new Map<string, number>();
  for (const b of base) seen.set(b, (seen.get(b) ?? 0) + 1);
  return base.map((b, i) => {
    if (b.length <= MAX_NAME && seen.get(b) === 1) return b;
    const hash = createHash("sha256").update(pairs[i]!.join("\0")).digest("hex").slice(0, 8);
    return `${b.slice(0, MAX_NAME - 9)}_${hash}`;
  });
}

type CallResult = Awaited<ReturnType<Client["callTool"]>>;

/** The result's content as text: text items as they are, other items as short notes. */
export function resultText(result: CallResult): string {
  if (!Array.isArray(result.content)) return JSON.stringify(result.toolResult ?? null);
  const parts = result.content.map((c) => {
    switch (c.type) {
      case "text":
        return c.text;
      case "image":
      case "audio":
        return `[${c.type} ${c.mimeType}, ${Math.floor((c.data.length * 3) / 4)} bytes]`;
      case "resource":
        return "text" in c.resource ? `[resource ${c.resource.uri}]\n${c.resource.text}` : `[resource ${c.resource.uri}]`;
      case "resource_link":
        return `[resource ${c.uri}]`;
      default:
        return `[${(c as { type: string }).type}]`;
    }
  });
  if (parts.length === 0 && result.structuredContent) return JSON.stringify(result.structuredContent);
  return parts.join("\n");
}

/** The last lines a server wrote to stderr: the reason a process died is usually there. */
class StderrTail {
  private lines: string[] = [];

  constructor(private readonly onLine: (line: string) => void) {}

  follow(transport: StdioClientTransport): void {
    let partial = "";
    transport.stderr?.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines.map((l) => l.trimEnd()).filter(Boolean)) {
        this.lines = [...this.lines.slice(-19), line];
        this.onLine(line);
      }
    });
  }

  /** The last line that reads like an error (a stack trace ends with frames), else the last line. */
  reason(): string | undefined {
    const errorLine = this.lines.findLast((l) => /error|exception|fatal|denied|not found|cannot|unable/i.test(l));
    return errorLine ?? this.lines.at(-1);
  }
}

function oneLine(text: string): string {
  const flat = text.replace(/\s*\n\s*/g, " | ").trim();
  return flat.length > 400 ? `${flat.slice(0, 400)}...` : flat;
}
