// The one schema: defaults, types and allowed values of every config key.
// Flags and environment variables arrive as strings, so each leaf also accepts its string form.
import { z } from "zod";
import { parseDuration } from "./duration.ts";
import { ID_PATTERN } from "./ids.ts";
import { MEMBER_ROLES } from "./messages.ts";

const ID_RULE = "1-64 characters from A-Z a-z 0-9 _ - (no dots, spaces, '*' or '>')";

const id = z.string().regex(ID_PATTERN, { message: ID_RULE });

const bool = z.preprocess(
  (v) => {
    if (typeof v !== "string") return v;
    const s = v.trim().toLowerCase();
    if (["true", "1", "yes", "on", ""].includes(s)) return true;
    if (["false", "0", "no", "off"].includes(s)) return false;
    return v;
  },
  z.boolean({ message: "true or false" }),
);

const int = (min: number, max: number) =>
  z.preprocess(
    (v) => (typeof v === "string" && /^\s*-?\d+\s*$/.test(v) ? Number(v) : v),
    z
      .number({ message: `an integer from ${min} to ${max}` })
      .int({ message: `an integer from ${min} to ${max}` })
      .min(min, { message: `an integer from ${min} to ${max}` })
      .max(max, { message: `an integer from ${min} to ${max}` }),
  );

/** Milliseconds; written as 10s, 500ms, 2m, 1h (a bare number is milliseconds). */
const duration = (min: number) =>
  z.preprocess(
    (v) => (typeof v === "string" || typeof v === "number" ? (parseDuration(v) ?? v) : v),
    z.number({ message: "a duration like 500ms, 10s, 2m or 1h" }).min(min, { message: `a duration of at least ${min}ms` }),
  );

/** Lists come as YAML arrays or as comma-separated strings ("code,research"). */
const list = <T extends z.ZodType>(item: T) =>
  z.preprocess(
    (v) =>
      typeof v === "string"
        ? v
            .split(",")
            .map((s) => s.trim())
            .filter((s) => s !== "")
        : v,
    z.array(item),
  );

const optionalString = z.string().optional();

const natsSchema = z.strictObject({
  urls: list(
    z.string().regex(/^(nats|tls|ws|wss):\/\/\S+$|^[\w.-]+:\d+$/, {
      message: "NATS URLs like nats://host:4222 or tls://host:4222, comma-separated",
    }),
  )
    .refine((a) => a.length > 0, { message: "at least one NATS URL" })
    .default(["nats://localhost:4222"]),
  embedded: bool.default(false),
  embedded_port: int(1, 65535).default(4222),
  embedded_host: z.string().min(1).default("127.0.0.1"),
  store_dir: z.string().min(1).default("~/.picoclaw/nats"),
  heartbeat_interval: duration(50).default(10_000),
  node_timeout: duration(100).default(60_000),
  connect_timeout: duration(100).default(5_000),
  /** JetStream replicas for the swarm's streams and buckets: 3 in a cluster of 3+, 1 on a single server. */
  replicas: int(1, 5).default(1),
  credentials: optionalString,
  nkey_seed: optionalString,
  token: optionalString,
  user: optionalString,
  password: optionalString,
  tls: z
    .strictObject({
      ca_file: optionalString,
      cert_file: optionalString,
      key_file: optionalString,
    })
    .prefault({}),
});

/** HTTP for probes, metrics, the web dashboard and the gateway: "HOST:PORT", empty = off. */
const httpSchema = z.strictObject({
  listen: z
    .string()
    .regex(/^$|^(\[[0-9a-fA-F:]+\]|[^:[\]\s]+):\d{1,5}$/, {
      message: "HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080 (port 0 picks a free one), or empty for no HTTP",
    })
    .default(""),
  /**
   * Keys for the web dashboard's pages (they show answers, request titles, node ids): a browser opens
   * /?key=KEY once, API clients send a bearer key. Without keys the pages are served on loopback only.
   */
  dashboard_keys: list(z.string().min(8, { message: "keys of at least 8 characters, comma-separated" })).default([]),
  /**
   * The token the web dashboard's Approve and Deny buttons must send (typed into the page); unset, the
   * page shows pending tool calls read-only and says why.
   */
  approval_token: z.string().min(16, { message: "a token of at least 16 characters" }).optional(),
});

const temporalSchema = z.strictObject({
  enabled: bool.optional(),
  address: z.string().default(""),
  namespace: z.string().min(1).default("default"),
  task_queue: z.string().min(1).default("picoclaw-swarm"),
});

/** Limits and defaults of the task pipeline (streams, consumers, planner, sizes). */
const tasksSchema = z.strictObject({
  /** Attempts per sub-task before it is failed (JetStream max_deliver). */
  max_deliver: int(1, 100).default(5),
  /** A running sub-task's message is kept alive (working()) well within this. */
  ack_wait: duration(1_000).default(30_000),
  /** Every request ends by then: answered, or failed naming what was unfinished (submit --timeout may shorten its own). */
  request_timeout: duration(1_000).default(30 * 60_000),
  /** Per sub-task limit unless the plan sets one; the LLM call is aborted when it passes. */
  timeout: duration(100).default(300_000),
  max_fanout: int(1, 64).default(8),
  max_depth: int(1, 16).default(4),
  max_prompt_bytes: int(1_024, 512 * 1024).default(64 * 1024),
  max_result_bytes: int(1_024, 512 * 1024).default(64 * 1024),
  /** How long JetStream keeps queued sub-tasks, requests and events. */
  retention: duration(60_000).default(86_400_000),
  /** A request whose recorded LLM tokens pass this is stopped and answered as failed (0: no limit). */
  max_tokens_per_request: int(0, 1_000_000_000).default(0),
});

/** LLM limits shared by the whole swarm (every node enforces them through NATS). */
const swarmLlmSchema = z.strictObject({
  /** Tokens the whole swarm may use per minute, counted in a KV bucket every node shares (0: no limit). */
  tokens_per_minute: int(0, 1_000_000_000).default(0),
  /** The window tokens_per_minute is counted in (its share: tokens_per_minute × window / 1m). */
  token_window: duration(1_000).default(60_000),
});

/** `picoclaw gateway`: the OpenAI-compatible front door. */
const gatewaySchema = z.strictObject({
  /** Bearer keys clients must send; required when listening beyond loopback. */
  api_keys: list(z.string().min(8, { message: "keys of at least 8 characters, comma-separated" })).default([]),
  /** Work waiting unstarted (requests no coordinator took + sub-tasks no node took) at which new chats get 429 (0: no limit). */
  max_pending: int(0, 1_000_000).default(100),
  /**
   * Whether an A2A message ("approve" / "deny: reason") may decide its task's waiting tool calls. Off by
   * default: the agent asking is the one a prompt injection steers, so its own calls are decided elsewhere.
   */
  a2a_decisions: bool.default(false),
});

/** The LLM a node uses. No base_url and no api_key: the built-in offline echo provider. */
const llmSchema = z.strictObject({
  provider: z.enum(["auto", "openai", "echo"], { message: "auto | openai | echo" }).default("auto"),
  base_url: z.string().url({ message: "an http(s) URL like http://localhost:11434/v1" }).optional(),
  model: z.string().min(1).default("gpt-4o-mini"),
  api_key: optionalString,
  temperature: z
    .preprocess(
      (v) => (typeof v === "string" && v.trim() !== "" ? Number(v) : v),
      z.number({ message: "a number from 0 to 2" }).min(0).max(2),
    )
    .optional(),
  max_tokens: int(1, 1_000_000).optional(),
});

/**
 * Optional ed25519 signing of sub-tasks (coordinator -> node), results (node -> coordinator), answers
 * (coordinator -> submit/watch), request records (coordinator -> KV -> coordinator) and drain/shutdown
 * (admin -> node). See docs/security.md.
 */
const securitySchema = z.strictObject({
  signing: bool.default(false),
  /** This node's nkey seed file (`picoclaw keygen` writes one). */
  key_file: optionalString,
  /** Public keys whose sub-tasks a worker or specialist runs, whose answers submit/watch print, and whose request records a coordinator resumes. */
  trusted_coordinators: list(
    z.string().regex(/^[A-Z2-7]{56}$/, { message: "nkey public keys (56 characters, from picoclaw keygen)" }),
  ).default([]),
  /** Public keys whose signed results a coordinator accepts. */
  trusted_workers: list(z.string().regex(/^[A-Z2-7]{56}$/, { message: "nkey public keys (56 characters, from picoclaw keygen)" })).default(
    [],
  ),
  /** Public keys whose drain and shutdown requests a node obeys (ping stays open). */
  trusted_admins: list(z.string().regex(/^[A-Z2-7]{56}$/, { message: "nkey public keys (56 characters, from picoclaw keygen)" })).default(
    [],
  ),
  /** Public keys whose approvals and denials of tool calls a worker accepts (and trusted_admins'). */
  trusted_approvers: list(
    z.string().regex(/^[A-Z2-7]{56}$/, { message: "nkey public keys (56 characters, from picoclaw keygen)" }),
  ).default([]),
  /** Signed messages older or newer than this are refused (replay window). */
  max_skew: duration(1_000).default(120_000),
});

const swarmSchema = z.strictObject({
  enabled: bool.default(false),
  role: z.enum(MEMBER_ROLES, { message: MEMBER_ROLES.join(" | ") }).default("worker"),
  hid: id.optional(),
  sid: id.optional(),
  node_id: id.optional(),
  capabilities: list(id).default(["general"]),
  max_concurrent: int(1, 1000).default(5),
  /** Peers one node keeps track of at most (heartbeats from more unknown nodes are dropped and counted). */
  max_nodes: int(10, 1_000_000).default(10_000),
  /** Coordinator leadership lease: a standby takes over within this after the leader dies. */
  lease_ttl: duration(1_000).default(10_000),
  /** On SIGTERM or drain, running sub-tasks get this long to finish before they are handed back. */
  drain_grace: duration(0).default(30_000),
  nats: natsSchema.prefault({}),
  http: httpSchema.prefault({}),
  temporal: temporalSchema.prefault({}),
  tasks: tasksSchema.prefault({}),
  llm: swarmLlmSchema.prefault({}),
  gateway: gatewaySchema.prefault({}),
  security: securitySchema.prefault({}),
});

/** Arguments of an MCP server from YAML (a list) or one env/flag string (comma-separated). */
const stringRecord = z.record(z.string(), z.string());

/**
 * One MCP server (PicoClaw's `tools.mcp.servers.<name>`): `command` (+ `args`, `env`, `cwd`) is started
 * over stdio; `url` (+ `headers`) is reached over streamable HTTP. `optional`: a node starts without it
 * when it fails at start (else start-up stops naming it).
 */
const mcpServerSchema = z
  .strictObject({
    enabled: bool.default(true),
    type: z.enum(["stdio", "http", "streamable-http", "sse"], { message: "stdio | http" }).optional(),
    command: z.string().min(1).optional(),
    args: list(z.string()).default([]),
    env: stringRecord.default({}),
    cwd: z.string().min(1).optional(),
    url: z.string().url({ message: "an http(s) URL like http://127.0.0.1:3001/mcp" }).optional(),
    headers: stringRecord.default({}),
    optional: bool.default(false),
  })
  .refine((s) => Boolean(s.command) !== Boolean(s.url), { message: "either command (stdio) or url (streamable HTTP), not both" });

/** A YAML mapping, or (from an env variable or flag) the same as JSON text. */
const jsonObject = <T extends z.ZodType>(inner: T) =>
  z.preprocess((v) => {
    if (typeof v !== "string") return v;
    try {
      return JSON.parse(v);
    } catch {
      return v;
    }
  }, inner);

/** MCP server names become tool names (`mcp_<server>_<tool>`): the id rule keeps them one token. */
const mcpServersSchema = jsonObject(z.record(id, mcpServerSchema, { message: "a mapping of server names to { command | url, ... }" }));

/** PicoClaw's `tools:` section, as its users write it (docs/decisions.md maps each key). */
const toolsSchema = z.strictObject({
  /** Paths outside the workspace the file tools may read (restrict_to_workspace stays on for the rest). */
  allow_read_paths: list(z.string().min(1)).default([]),
  /** Paths outside the workspace the write tools may write; none by default. */
  allow_write_paths: list(z.string().min(1)).default([]),
  /** Built-in file tools (read_file, write_file, edit_file, append_file, list_dir): on, confined to the workspace. */
  files: z.strictObject({ enabled: bool.default(true) }).prefault({}),
  exec: z
    .strictObject({
      /** Off by default: a swarm takes requests from the network. */
      enabled: bool.default(false),
      timeout_seconds: int(1, 86_400).default(60),
      enable_deny_patterns: bool.default(true),
      custom_deny_patterns: list(z.string().min(1)).default([]),
    })
    .prefault({}),
  web: z
    .strictObject({
      fetch: z
        .strictObject({
          /** Off by default; on, it still refuses loopback, link-local and private addresses unless listed. */
          enabled: bool.default(false),
          /** Hosts (name or address, optionally :port) web_fetch may reach although they are internal. */
          allow_hosts: list(z.string().min(1)).default([]),
          max_bytes: int(1_024, 10 * 1024 * 1024).default(256 * 1024),
          timeout_seconds: int(1, 600).default(30),
        })
        .prefault({}),
    })
    .prefault({}),
  mcp: z
    .strictObject({
      enabled: bool.default(true),
      servers: mcpServersSchema.default({}),
    })
    .prefault({}),
  /** exec and stdio MCP servers inside bubblewrap: workspace writable, the rest read-only, no network. */
  isolation: z.strictObject({ enabled: bool.default(false) }).prefault({}),
  /** A tool result is cut at this many bytes before the model sees it (the cut is said). */
  max_output_bytes: int(1_024, 256 * 1024).default(32 * 1024),
  /** Calls a person must approve first (none by default): tool names or globs (`exec`, `mcp_github_*`). */
  approval: z
    .strictObject({
      required: list(
        z.string().regex(/^[A-Za-z0-9_*-]{1,64}$/, { message: "tool names or globs like exec, write_file, mcp_github_*" }),
      ).default([]),
      /** A call nobody decided by then is denied ("approval timed out"). */
      timeout: duration(1_000).default(60 * 60_000),
    })
    .prefault({}),
});

/** PicoClaw's `agents.defaults`: where a node's tools work and how long one sub-task's tool loop may go. */
const agentsSchema = z.strictObject({
  defaults: z
    .strictObject({
      /** The node's workspace; empty: ~/.picoclaw/workspace/<node id>. */
      workspace: z.string().default(""),
      restrict_to_workspace: bool.default(true),
      max_tool_iterations: int(1, 1_000).default(20),
    })
    .prefault({}),
});

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

export const configSchema = z
  .strictObject({
    swarm: swarmSchema.prefault({}),
    llm: llmSchema.prefault({}),
    tools: toolsSchema.prefault({}),
    agents: agentsSchema.prefault({}),
    log: z
      .strictObject({
        level: z.enum(LOG_LEVELS, { message: LOG_LEVELS.join(" | ") }).default("info"),
        /** The live dashboard without a terminal prints a frame on a noticeable change, at most this often. */
        dashboard_interval: duration(0).default(5_000),
      })
      .prefault({}),
  })
  .refine((c) => c.swarm.nats.node_timeout > c.swarm.nats.heartbeat_interval, {
    path: ["swarm", "nats", "node_timeout"],
    message: "longer than swarm.nats.heartbeat_interval",
  });

export type Config = z.output<typeof configSchema>;

/** Keys whose values are never printed or logged. */
export const SECRET_KEYS = [
  "swarm.nats.token",
  "swarm.nats.password",
  "llm.api_key",
  "swarm.gateway.api_keys",
  "swarm.http.dashboard_keys",
  "swarm.http.approval_token",
] as const;

/** Boolean keys: on the command line they may stand alone (`--swarm.enabled`). */
export const BOOLEAN_KEYS = [
  "swarm.enabled",
  "swarm.nats.embedded",
  "swarm.temporal.enabled",
  "swarm.security.signing",
  "tools.exec.enabled",
  "tools.web.fetch.enabled",
  "tools.isolation.enabled",
  "swarm.gateway.a2a_decisions",
] as const;

/** Every leaf key of the schema, dotted ("swarm.nats.urls"), read from the schema itself. */
export function configKeys(): string[] {
  const out: string[] = [];
  const walk = (schema: z.ZodType, prefix: string) => {
    const inner = unwrapObject(schema);
    if (!inner) {
      out.push(prefix);
      return;
    }
    for (const [k, v] of Object.entries(inner.shape)) walk(v as z.ZodType, prefix ? `${prefix}.${k}` : k);
  };
  walk(configSchema as unknown as z.ZodType, "");
  return out;
}

function unwrapObject(schema: z.ZodType): z.ZodObject | undefined {
  let s: unknown = schema;
  for (let i = 0; i < 5; i++) {
    if (s instanceof z.ZodObject) return s;
    const def = (s as { def?: { innerType?: unknown; in?: unknown; type?: string } }).def;
    const next = def?.innerType ?? (def?.type === "pipe" ? def.in : undefined);
    if (!next) return undefined;
    s = next;
  }
  return undefined;
}

/** One line per config key for `--help` (the default comes from the schema). A test keeps it complete. */
export const CONFIG_HELP: Record<string, string> = {
  "swarm.enabled": "run a swarm node (implied by the role executables and by a --swarm.role flag)",
  "swarm.role": "coordinator | worker | specialist",
  "swarm.hid": "swarm identity (H-id): nodes with the same H-id form one swarm; unset: adopt or create one",
  "swarm.sid": "session identity; unset: a new one at every start",
  "swarm.node_id": "this node's id on the dashboard and in logs; unset: claw- + 8 hex, new at every start",
  "swarm.capabilities": "what this node can do (comma-separated); workers also take general",
  "swarm.max_concurrent": "sub-tasks run at once; on a coordinator, requests planned or synthesized at once",
  "swarm.max_nodes": "peers a node keeps track of; heartbeats of more unknown nodes are dropped and counted",
  "swarm.lease_ttl": "coordinator leadership lease: a standby takes over within this after the leader dies",
  "swarm.drain_grace": "on SIGTERM or drain, running sub-tasks get this long to finish before they are handed back",
  "swarm.nats.urls": "NATS servers (nats://, tls://, user:pass@host), comma-separated",
  "swarm.nats.embedded": "start (or join) a local nats-server with JetStream instead of using swarm.nats.urls",
  "swarm.nats.embedded_port": "port of the embedded nats-server",
  "swarm.nats.embedded_host": "address the embedded nats-server listens on",
  "swarm.nats.store_dir": "JetStream store of the embedded nats-server",
  "swarm.nats.heartbeat_interval": "how often a node says it is alive",
  "swarm.nats.node_timeout": "silence after which a peer is offline (longer than heartbeat_interval)",
  "swarm.nats.connect_timeout": "first-connection timeout",
  "swarm.nats.replicas": "JetStream replicas of the swarm's streams and buckets: 3 in a cluster of 3+, 1 on one server",
  "swarm.nats.credentials": "NATS .creds file (JWT + nkey)",
  "swarm.nats.nkey_seed": "file holding a NATS nkey seed",
  "swarm.nats.token": "NATS auth token (secret)",
  "swarm.nats.user": "NATS user name",
  "swarm.nats.password": "NATS password (secret)",
  "swarm.nats.tls.ca_file": "CA certificate to trust for tls:// URLs",
  "swarm.nats.tls.cert_file": "client certificate for mutual TLS",
  "swarm.nats.tls.key_file": "client certificate's key for mutual TLS",
  "swarm.http.listen": "HOST:PORT for /healthz, /readyz, /metrics, the web dashboard and the gateway; empty: no HTTP",
  "swarm.http.dashboard_keys":
    "keys for the web dashboard's pages (secret; a browser opens /?key=KEY once); without keys they are served on loopback only",
  "swarm.http.approval_token":
    "the token the web dashboard's Approve and Deny buttons need (secret, 16+ characters); unset: pending calls are shown read-only",
  "swarm.temporal.enabled": "true with no address means localhost:7233; false turns Temporal off even with an address",
  "swarm.temporal.address": "Temporal frontend (localhost:7233) to run each request as a workflow; empty: no Temporal",
  "swarm.temporal.namespace": "Temporal namespace of the workflows",
  "swarm.temporal.task_queue": "Temporal task queue of the workflows",
  "swarm.tasks.max_deliver": "attempts per sub-task before it fails",
  "swarm.tasks.ack_wait": "JetStream ack wait of a sub-task; a running one is kept alive well within it",
  "swarm.tasks.request_timeout": "every request's deadline (submit --timeout may shorten its own)",
  "swarm.tasks.timeout": "per sub-task limit unless the plan sets one",
  "swarm.tasks.max_fanout": "sub-tasks a plan may run side by side",
  "swarm.tasks.max_depth": "longest chain of dependent sub-tasks in a plan",
  "swarm.tasks.max_prompt_bytes": "larger requests and sub-task prompts are rejected",
  "swarm.tasks.max_result_bytes": "larger sub-task results are cut, with a note",
  "swarm.tasks.retention": "how long queued work, events, records, dead letters and stored answers are kept",
  "swarm.tasks.max_tokens_per_request": "a request whose LLM tokens pass this is stopped and answered as failed (0: no limit)",
  "swarm.llm.tokens_per_minute": "LLM tokens the whole swarm may use per minute, shared through NATS (0: no limit)",
  "swarm.llm.token_window": "the window tokens_per_minute is counted in",
  "swarm.gateway.api_keys": "bearer keys gateway clients must send (secret); required when listening beyond loopback",
  "swarm.gateway.a2a_decisions": "an A2A message on a task may approve or deny its waiting tool calls (off: decide with picoclaw approve)",
  "swarm.gateway.max_pending": "unstarted work at which the gateway answers new chats 429 (0: no limit)",
  "swarm.security.signing": "sign and verify sub-tasks, results, answers, records and drain/shutdown (ed25519)",
  "swarm.security.key_file": "this process's nkey seed file (picoclaw keygen writes one)",
  "swarm.security.trusted_coordinators": "public keys whose sub-tasks, answers and request records are trusted",
  "swarm.security.trusted_workers": "public keys whose results a coordinator accepts",
  "swarm.security.trusted_admins": "public keys whose drain and shutdown a node obeys",
  "swarm.security.trusted_approvers": "public keys whose approvals and denials of tool calls workers accept (signing on)",
  "swarm.security.max_skew": "signed messages older or newer than this are refused (replay window)",
  "llm.provider": "auto (OpenAI-compatible when a base URL or key is set, else echo) | openai | echo",
  "llm.base_url": "OpenAI-compatible endpoint, e.g. http://localhost:11434/v1",
  "llm.model": "model name sent to the endpoint",
  "llm.api_key": "API key of the endpoint (secret; also OPENAI_API_KEY)",
  "llm.temperature": "sampling temperature, 0 to 2; unset: the provider's",
  "llm.max_tokens": "most tokens per completion; unset: the provider's",
  "tools.allow_read_paths": "paths outside the workspace the file tools may read",
  "tools.allow_write_paths": "paths outside the workspace the write tools may write",
  "tools.files.enabled": "the file tools (read_file, write_file, edit_file, append_file, list_dir), in the workspace",
  "tools.exec.enabled": "the exec tool (sh -c in the workspace); off: the swarm takes requests from the network",
  "tools.exec.timeout_seconds": "an exec command's process group is killed after this many seconds",
  "tools.exec.enable_deny_patterns": "refuse exec commands matching the built-in dangerous patterns",
  "tools.exec.custom_deny_patterns": "more regular expressions of exec commands to refuse",
  "tools.web.fetch.enabled": "the web_fetch tool (refuses loopback, link-local and private addresses)",
  "tools.web.fetch.allow_hosts": "internal hosts (name or address, optionally :port) web_fetch may reach",
  "tools.web.fetch.max_bytes": "web_fetch reads at most this many bytes of a page",
  "tools.web.fetch.timeout_seconds": "web_fetch gives up after this many seconds",
  "tools.mcp.enabled": "offer the tools of the configured MCP servers",
  "tools.mcp.servers": "MCP servers by name: { command, args, env, cwd } or { url, headers } (JSON in a flag)",
  "tools.isolation.enabled": "run exec and stdio MCP servers inside bubblewrap (no network, workspace writable)",
  "tools.max_output_bytes": "a tool result is cut at this many bytes before the model sees it",
  "tools.approval.required": "tool calls a person must approve first: names or globs (exec, write_file, mcp_github_*); none by default",
  "tools.approval.timeout": "a call nobody approved or denied by then is denied (approval timed out)",
  "agents.defaults.workspace": "the node's workspace; empty: ~/.picoclaw/workspace/<node id>",
  "agents.defaults.restrict_to_workspace": "keep the file tools inside the workspace (and the allow_*_paths)",
  "agents.defaults.max_tool_iterations": "most model turns of one sub-task's tool loop",
  "log.level": "debug | info | warn | error",
  "log.dashboard_interval": "the live dashboard without a terminal prints a frame on a change at most this often",
};
