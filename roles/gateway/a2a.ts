// The swarm as one A2A agent (A2A 1.0 as @a2a-js/sdk speaks it, and the 0.3 JSON-RPC names `message/send`,
// `message/stream`, `tasks/get`, `tasks/cancel` through the SDK's compat layer): the agent card at
// /.well-known/agent-card.json, JSON-RPC at /a2a. One A2A task is one swarm request. A tool call that
// waits for a person is the task's `input-required` state, with the call in its message; a message on
// the same task answers it ("approve", or "deny: <reason>"), and the task goes on to its answer.
import { randomUUID } from "node:crypto";
import {
  A2A_PROTOCOL_VERSION,
  A2A_VERSION_HEADER,
  AGENT_CARD_PATH,
  type AgentCard,
  formatSSEErrorEvent,
  formatSSEEvent,
  type Message,
  Role,
  TaskState,
} from "@a2a-js/sdk";
import { duplicateInterfacesForLegacy, isV1JsonRpcMethod } from "@a2a-js/sdk/compat/v0_3";
import { LegacyJsonRpcTransportHandler } from "@a2a-js/sdk/compat/v0_3/server";
import {
  AgentEvent,
  type AgentExecutor,
  DefaultRequestHandler,
  defaultServerCallContextBuilder,
  type ExecutionEventBus,
  InMemoryTaskStore,
  JsonRpcTransportHandler,
  type RequestContext,
  validateVersion,
} from "@a2a-js/sdk/server";
import type { KV } from "nats";
import { decideCall, pendingCalls, printable, untrustedApprover } from "../../lib/approvals.ts";
import { createDoorbell } from "../../lib/doorbell.ts";
import type { Handler } from "../../lib/http.ts";
import { newRequestId } from "../../lib/ids.ts";
import type { SwarmNode } from "../../lib/node.ts";
import { storeRequest } from "../../lib/requests.ts";
import { loadKey, sealRecord, trustedAnswerKeys } from "../../lib/signing.ts";
import { openTasksKv } from "../../lib/streams.ts";
import type { RequestEvent } from "../../lib/task-messages.ts";
import { VERSION } from "../../lib/version.ts";
import { type AnswerFollower, followAnswer } from "./follow-answer.ts";

/** After the request's deadline the coordinator answers it as failed; the task waits this much longer. */
const DEADLINE_GRACE_MS = 2_000;
/** How often a followed task looks for calls of its request waiting for a person (besides when one parks). */
const PENDING_CHECK_MS = 15_000;
const A2A_DECISIONS_OFF =
  "A person decides them with picoclaw approve ID / deny ID (or a dashboard): this gateway takes no decisions over A2A (swarm.gateway.a2a_decisions is off).";

const text = (value: string) => ({
  content: { $case: "text" as const, value },
  metadata: undefined,
  filename: "",
  mediaType: "text/plain",
});

/** The user's words: every text part of the message. */
function textOf(m: Message): string {
  return m.parts
    .map((p) => (p.content?.$case === "text" ? p.content.value : ""))
    .filter(Boolean)
    .join("\n");
}

/** "approve [note]" or "deny[:] reason": a person's answer to an input-required task (nothing looser). */
export function parseDecision(said: string): { outcome: "approved" | "denied"; note?: string } | undefined {
  const m = /^\s*(approve|deny)\b[\s:,-]*([\s\S]*)$/i.exec(said);
  if (!m) return undefined;
  return { outcome: m[1]!.toLowerCase() === "approve" ? "approved" : "denied", note: m[2]!.trim() || undefined };
}

class SwarmExecutor implements AgentExecutor {
  /** Tasks being followed now: a cancel stops following at once. */
  private readonly following = new Map<string, AbortController>();
  private kvOpened?: Promise<KV>;
  constructor(private readonly node: SwarmNode) {}

  /** The tasks bucket (waiting calls, decisions), opened when a task first needs it. */
  private get kv(): Promise<KV> {
    this.kvOpened ??= openTasksKv(this.node.link.nc, this.node.names, this.node.config);
    this.kvOpened.catch(() => {
      this.kvOpened = undefined; // asked again next time
    });
    return this.kvOpened;
  }

  private agentMessage(taskId: string, contextId: string, words: string): Message {
    return {
      role: Role.ROLE_AGENT,
      messageId: randomUUID(),
      parts: [text(words)],
      taskId,
      contextId,
      extensions: [],
      metadata: {},
      referenceTaskIds: [],
    };
  }

  private status(bus: ExecutionEventBus, ctx: { taskId: string; contextId: string }, state: TaskState, words?: string) {
    bus.publish(
      AgentEvent.statusUpdate({
        taskId: ctx.taskId,
        contextId: ctx.contextId,
        status: {
          state,
          message: words ? this.agentMessage(ctx.taskId, ctx.contextId, words) : undefined,
          timestamp: new Date().toISOString(),
        },
        metadata: {},
      }),
    );
  }

  execute = async (ctx: RequestContext, bus: ExecutionEventBus): Promise<void> => {
    const { node } = this;
    const cfg = node.config;
    const said = textOf(ctx.userMessage);
    let request = ctx.task?.metadata?.request as string | undefined;
    if (ctx.task && request) {
      bus.publish(AgentEvent.task(ctx.task));
      // A follow-up on a task that waits for a person: the person's decision on its waiting calls.
      const waiting = await this.waitingCalls(request);
      if (waiting.length > 0) {
        if (!cfg.swarm.gateway.a2a_decisions) return this.askAgain(bus, ctx, waiting, A2A_DECISIONS_OFF);
        const d = parseDecision(said);
        if (!d) return this.askAgain(bus, ctx, waiting, `Answer "approve" or "deny: <reason>".`);
        const signer = cfg.swarm.security.signing ? loadKey(cfg) : undefined;
        const untrusted = signer && untrustedApprover(cfg.swarm.security, signer.publicKey);
        if (untrusted) return this.askAgain(bus, ctx, waiting, `Not decided: ${untrusted}.`);
        for (const call of waiting) {
          await decideCall(
            await this.kv,
            {
              id: call.id,
              outcome: d.outcome,
              by: `a2a via gateway ${node.identity.node}${signer ? ` (${signer.publicKey})` : ""}`,
              note: d.note,
            },
            signer ? (key, rec) => sealRecord(signer, key, rec) : undefined,
          );
        }
      }
    } else {
      request = newRequestId();
      bus.publish(
        AgentEvent.task({
          id: ctx.taskId,
          contextId: ctx.contextId,
          status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: new Date().toISOString() },
          artifacts: [],
          history: [ctx.userMessage],
          metadata: { request },
        }),
      );
    }
    const follow = await followAnswer(node, request, trustedAnswerKeys(cfg));
    try {
      if (!ctx.task) {
        const deadline = cfg.swarm.tasks.request_timeout;
        await storeRequest(
          node.link.nc,
          node.names,
          { v: 1, request, text: said, submitted_at: Date.now(), timeout_ms: deadline },
          { untilMs: cfg.swarm.nats.connect_timeout },
        );
        node.log.info("A2A task sent to the swarm", { task: ctx.taskId, request });
      }
      this.status(bus, ctx, TaskState.TASK_STATE_WORKING, `request ${request} is running in swarm ${node.names.hid}`);
      await this.untilEnd(bus, ctx, request, follow);
    } finally {
      await follow.stop();
    }
  };

  /**
   * Follows the request to its answer, or to a call that waits for a person (input-required: this turn
   * ends). Waiting calls are looked up in the tasks bucket when one is heard of, and every few seconds
   * (one may have parked before this turn began).
   */
  private async untilEnd(bus: ExecutionEventBus, ctx: RequestContext, request: string, follow: AnswerFollower): Promise<void> {
    const stop = new AbortController();
    this.following.get(ctx.taskId)?.abort();
    this.following.set(ctx.taskId, stop);
    const bell = createDoorbell();
    follow.onApproval(() => bell.ring());
    bell.ring(); // look once at the start
    const outcome = follow.outcome(this.node.config.swarm.tasks.request_timeout + DEADLINE_GRACE_MS, stop.signal).then((ev) => ({ ev }));
    try {
      for (;;) {
        const next = await Promise.race([outcome, bell.wait(PENDING_CHECK_MS).then(() => undefined)]);
        if (stop.signal.aborted) return; // canceled: the cancel said so
        if (next) return this.finish(bus, ctx, request, next.ev);
        const calls = await this.waitingCalls(request);
        if (calls.length > 0) {
          const how = this.node.config.swarm.gateway.a2a_decisions
            ? `Answer "approve" or "deny: <reason>" on this task (or: picoclaw approve ID).`
            : A2A_DECISIONS_OFF;
          return this.askAgain(bus, ctx, calls, how);
        }
      }
    } finally {
      if (this.following.get(ctx.taskId) === stop) this.following.delete(ctx.taskId);
      stop.abort();
    }
  }

  /** The calls of `request` waiting for a person (none when the tasks bucket cannot be read now). */
  private async waitingCalls(request: string) {
    return (await pendingCalls(await this.kv).catch(() => [])).filter((c) => c.request === request);
  }

  private askAgain(
    bus: ExecutionEventBus,
    ctx: RequestContext,
    calls: { id: string; tool: string; arguments: string; node: string }[],
    how: string,
  ) {
    const list = calls.map((c) => `${c.id}: ${c.tool} ${printable(c.arguments, 500)} on ${c.node}`).join("\n");
    this.status(bus, ctx, TaskState.TASK_STATE_INPUT_REQUIRED, `Waiting for approval:\n${list}\n${how}`);
  }

  private finish(bus: ExecutionEventBus, ctx: RequestContext, request: string, ev: RequestEvent | undefined) {
    if (!ev) return this.status(bus, ctx, TaskState.TASK_STATE_FAILED, `no answer by the request's deadline (picoclaw watch ${request})`);
    if (ev.kind === "failed") return this.status(bus, ctx, TaskState.TASK_STATE_FAILED, ev.error ?? "the swarm rejected the request");
    bus.publish(
      AgentEvent.artifactUpdate({
        taskId: ctx.taskId,
        contextId: ctx.contextId,
        artifact: {
          artifactId: randomUUID(),
          name: "answer",
          description: `The swarm's answer to request ${request}`,
          parts: [text(ev.answer ?? "")],
          metadata: { request, status: ev.status },
          extensions: [],
        },
        append: false,
        lastChunk: true,
        metadata: undefined,
      }),
    );
    this.status(bus, ctx, ev.status === "failed" ? TaskState.TASK_STATE_FAILED : TaskState.TASK_STATE_COMPLETED);
  }

  /** The A2A task ends here; its swarm request goes on to its answer or deadline (the swarm has no cancel). */
  cancelTask = async (taskId: string, bus: ExecutionEventBus): Promise<void> => {
    this.following.get(taskId)?.abort();
    bus.publish(
      AgentEvent.statusUpdate({
        taskId,
        contextId: "",
        status: { state: TaskState.TASK_STATE_CANCELED, message: undefined, timestamp: new Date().toISOString() },
        metadata: {},
      }),
    );
  };
}

/** The agent card, its interfaces at `origin` (declared at 1.0 and at 0.3). */
function agentCard(node: SwarmNode, origin: string): AgentCard {
  return {
    name: `PicoClaw Swarm ${node.names.hid}`,
    description:
      "A swarm of agents as one: the request is planned into sub-tasks, run by the workers whose capabilities fit, and answered as one.",
    supportedInterfaces: duplicateInterfacesForLegacy(
      [{ url: `${origin}/a2a`, protocolBinding: "JSONRPC", tenant: "", protocolVersion: A2A_PROTOCOL_VERSION }],
      ["JSONRPC"],
    ),
    provider: { organization: "PicoClaw Swarm", url: origin },
    version: VERSION,
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes: {},
    securityRequirements: [],
    defaultInputModes: ["text"],
    defaultOutputModes: ["text"],
    skills: [
      {
        id: "swarm",
        name: "Swarm request",
        description: "Anything the swarm's workers and specialists can do; tool calls that need approval make the task input-required.",
        tags: ["swarm", "multi-agent"],
        examples: ["Review this change: the HTTP client now retries failed requests"],
        inputModes: ["text"],
        outputModes: ["text"],
        securityRequirements: [],
      },
    ],
    documentationUrl: "",
    signatures: [],
  };
}

/** `/a2a` and the agent card; `authorize` throws when the gateway's keys refuse the call. */
export function a2aRoutes(node: SwarmNode, authorize: (req: Request) => Response | undefined): Record<string, Handler> {
  let card: AgentCard | undefined;
  const handler = new DefaultRequestHandler(agentCard(node, "http://localhost"), new InMemoryTaskStore(), new SwarmExecutor(node));
  const v1 = new JsonRpcTransportHandler(handler);
  const legacy = new LegacyJsonRpcTransportHandler(handler);
  const rpc: Handler = async (req, srv) => {
    if (req.method !== "POST") return Response.json({ error: "POST JSON-RPC to /a2a" }, { status: 405 });
    const refused = authorize(req);
    if (refused) return refused;
    srv.timeout(req, 0); // a task may wait for its answer for minutes
    card ??= agentCard(node, new URL(req.url).origin);
    let body: Record<string, unknown>;
    try {
      body = (await req.json()) as Record<string, unknown>;
    } catch {
      return Response.json({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "the body is not JSON" } });
    }
    const isLegacy = !isV1JsonRpcMethod(body.method);
    const requestedVersion = req.headers.get(A2A_VERSION_HEADER) ?? undefined;
    const context = defaultServerCallContextBuilder({
      extensions: undefined,
      user: undefined,
      headers: Object.fromEntries(req.headers),
      requestedVersion,
    });
    try {
      validateVersion(context.requestedVersion, card, "JSONRPC");
      const out = await (isLegacy ? legacy : v1).handle(body, context);
      if (!(Symbol.asyncIterator in Object(out))) return Response.json(out);
      const events = out as AsyncGenerator<unknown>;
      const enc = new TextEncoder();
      const stream = new ReadableStream<Uint8Array>({
        async start(c) {
          try {
            for await (const ev of events) c.enqueue(enc.encode(formatSSEEvent(ev)));
          } catch (err) {
            const error = (isLegacy ? LegacyJsonRpcTransportHandler.mapToLegacyJSONRPCError : JsonRpcTransportHandler.mapToJSONRPCError)(
              err,
            );
            c.enqueue(enc.encode(formatSSEErrorEvent({ jsonrpc: "2.0", id: (body.id as string | number | null) ?? null, error })));
          } finally {
            c.close();
          }
        },
      });
      return new Response(stream, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
    } catch (err) {
      const error = (isLegacy ? LegacyJsonRpcTransportHandler.mapToLegacyJSONRPCError : JsonRpcTransportHandler.mapToJSONRPCError)(err);
      return Response.json({ jsonrpc: "2.0", id: body.id ?? null, error });
    }
  };
  return {
    "/a2a": rpc,
    [`/${AGENT_CARD_PATH}`]: (req) => Response.json(agentCard(node, new URL(req.url).origin)),
  };
}
