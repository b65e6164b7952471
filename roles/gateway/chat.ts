// One chat completion as one swarm request: admit it (a coordinator is online, the swarm is not
// saturated), store the request in the REQUESTS queue, follow its events from the EVENTS stream, and
// answer: the whole completion at once, or server-sent chunks as the coordinator's merge produces them.
// Nothing is kept once the HTTP response ends: the request itself lives on in the swarm.
import type { JetStreamManager } from "nats";
import { formatDuration } from "../../lib/duration.ts";
import { newRequestId } from "../../lib/ids.ts";
import { LLM_SECONDS_BUCKETS } from "../../lib/metrics.ts";
import type { SwarmNode } from "../../lib/node.ts";
import { onlineCapabilities } from "../../lib/registry.ts";
import { storeRequest } from "../../lib/requests.ts";
import { trustedAnswerKeys } from "../../lib/signing.ts";
import type { RequestEvent, RequestMsg } from "../../lib/task-messages.ts";
import { type AnswerFollower, followAnswer } from "./follow-answer.ts";
import {
  ApiError,
  type ChatRequest,
  type Completed,
  capabilitiesOf,
  chunk,
  completionBody,
  modelNotFound,
  parseChatRequest,
  pieces,
  requestText,
  sse,
} from "./openai.ts";

/** After the request's deadline the coordinator answers it as failed; the gateway waits this much longer for that. */
const DEADLINE_ANSWER_GRACE_MS = 2_000;
/** How old a reading of the swarm's waiting work may be when a chat is admitted. */
const WAITING_FRESH_MS = 250;
/** SSE comments while nothing else is sent, so proxies and clients keep the stream open. */
const KEEP_ALIVE_MS = 15_000;

export type ChatHandler = (req: Request, cors: Record<string, string>) => Promise<Response>;

export function chatCompletions(node: SwarmNode): ChatHandler {
  const { config: cfg, log, names, metrics } = node;
  // Signing on: only answers (and streamed pieces) signed by a trusted coordinator reach a client.
  const trusted = trustedAnswerKeys(cfg);
  const nc = node.link.nc;
  const maxText = cfg.swarm.tasks.max_prompt_bytes;
  // JSON escaping and the chat's other fields make a body bigger than its text.
  const maxBody = 4 * maxText;
  const deadlineMs = cfg.swarm.tasks.request_timeout;
  const chats = metrics.counter(
    "picoclaw_gateway_chats_total",
    "Chat completions this gateway answered, by HTTP status and stream (true/false).",
  );
  const tokens = metrics.counter(
    "picoclaw_gateway_tokens_total",
    "Tokens of the requests this gateway answered, by type (prompt, completion).",
  );
  const seconds = metrics.histogram(
    "picoclaw_gateway_chat_duration_seconds",
    "Time from a chat's arrival to its answer.",
    LLM_SECONDS_BUCKETS,
  );
  let open = 0;
  metrics.gauge("picoclaw_gateway_open_chats", "Chats waiting for their answer now.", () => [{ value: open }]);
  let jsm: JetStreamManager | undefined;

  /** A coordinator is online, the model's capability is, and the waiting work is below swarm.gateway.max_pending. */
  const admit = async (model: string, caps: string[] | undefined) => {
    await node.membership.discovered;
    const peers = [...node.membership.registry.values()];
    const live = (s: string) => s !== "offline" && s !== "draining";
    if (!peers.some((p) => p.info.role === "coordinator" && live(p.status))) {
      throw new ApiError(
        503,
        `swarm ${names.hid} has no coordinator online: the request would only wait; start one (picoclaw --swarm.role coordinator) or try again later`,
        "no_coordinator",
        null,
        { "retry-after": "5" },
      );
    }
    if (caps) {
      const online = onlineCapabilities(node.membership.registry);
      if (!online.has(caps[0]!)) throw modelNotFound(model, [...online.keys()].sort());
    }
    const max = cfg.swarm.gateway.max_pending;
    if (max > 0) {
      const w = await waitingWork().catch(() => undefined);
      if (w && w.requests + w.subTasks >= max) {
        throw new ApiError(
          429,
          `the swarm is saturated: ${w.requests} requests wait for a coordinator and ${w.subTasks} sub-tasks for a node ` +
            `(swarm.gateway.max_pending is ${max}); try again shortly`,
          "swarm_saturated",
          null,
          { "retry-after": "2" },
        );
      }
    }
  };

  /**
   * Work the swarm has not started: requests no coordinator has taken (the REQUESTS consumer's pending
   * messages) and sub-tasks no node has taken (the TASKS queues). Read at most every WAITING_FRESH_MS,
   * so a burst of chats costs one read.
   */
  let waiting: { at: number; value: Promise<{ requests: number; subTasks: number }> } | undefined;
  const waitingWork = () => {
    if (!waiting || performance.now() - waiting.at > WAITING_FRESH_MS) {
      const value = (async () => {
        jsm ??= await nc.jetstreamManager({ timeout: 2_000 });
        const [requests, queued] = await Promise.all([
          jsm.consumers.info(names.streams.requests, names.consumers.requests).then(
            (ci) => ci.num_pending,
            () => 0,
          ),
          node.queue.refresh(),
        ]);
        return { requests, subTasks: queued.total };
      })();
      waiting = { at: performance.now(), value };
      value.catch(() => {
        waiting = undefined;
      });
    }
    return waiting.value;
  };

  return async (req, cors) => {
    const started = performance.now();
    let stream = false;
    const finish = (status: number) => {
      chats.inc({ code: String(status), stream: String(stream) });
      seconds.observe((performance.now() - started) / 1000);
    };
    try {
      const body = parseChatRequest(await readBody(req, maxBody));
      stream = body.stream === true;
      const text = requestText(body.messages);
      const size = new TextEncoder().encode(text).length;
      if (size > maxText) {
        throw new ApiError(
          400,
          `the chat is ${size} bytes of text, more than swarm.tasks.max_prompt_bytes (${maxText})`,
          "request_too_large",
          "messages",
        );
      }
      const caps = capabilitiesOf(body.model);
      await admit(body.model, caps);

      const request = newRequestId();
      const msg: RequestMsg = { v: 1, request, text, capabilities: caps, submitted_at: Date.now(), timeout_ms: deadlineMs };
      const follow = await followAnswer(node, request, trusted).catch((err) => {
        throw unavailable(err);
      });
      open++;
      const done = () => {
        open--;
        void follow.stop();
      };
      try {
        await storeRequest(nc, names, msg, { untilMs: cfg.swarm.nats.connect_timeout, signal: req.signal });
      } catch (err) {
        done();
        throw unavailable(err);
      }
      log.debug("Chat sent to the swarm", { request, model: body.model, stream });
      const waitMs = deadlineMs + DEADLINE_ANSWER_GRACE_MS;
      const head = { request, model: body.model, created: Math.floor(Date.now() / 1000) };
      if (stream) {
        return streamed(follow, head, body, waitMs, req.signal, cors, (status, ev) => {
          done();
          finish(status);
          if (status !== 499) logAnswer(request, body.model, status, ev, started, true);
        });
      }
      const ev = await follow.outcome(waitMs, req.signal).finally(done);
      if (req.signal.aborted) {
        // The client closed the connection first: nobody reads this; the request goes on in the swarm.
        finish(499);
        log.info("Chat client went away; the request goes on in the swarm", { request });
        return new Response(null, { status: 499 });
      }
      const completed = completedFrom(ev, head, deadlineMs);
      finish(200);
      logAnswer(request, body.model, 200, ev, started, false);
      return Response.json(completionBody(completed), { headers: { ...cors, "x-picoclaw-request": request } });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      finish(err.status);
      log.info("Chat refused", { status: err.status, code: err.code ?? undefined, error: err.message.slice(0, 300) });
      return err.response(cors);
    }
  };

  function logAnswer(request: string, model: string, status: number, ev: RequestEvent | undefined, startedAt: number, isStream: boolean) {
    if (ev?.usage) {
      tokens.inc({ type: "prompt" }, ev.usage.prompt_tokens);
      tokens.inc({ type: "completion" }, ev.usage.completion_tokens);
    }
    log.info("Chat answered", {
      request,
      model,
      status,
      stream: isStream,
      duration_ms: Math.round(performance.now() - startedAt),
      tokens: ev?.usage?.total_tokens,
    });
  }

  /** Server-sent chunks: the merge's text as it comes, then the rest of the answer, the finish, the usage. */
  function streamed(
    follow: AnswerFollower,
    head: { request: string; model: string; created: number },
    body: ChatRequest,
    waitMs: number,
    signal: AbortSignal,
    cors: Record<string, string>,
    ended: (status: number, ev?: RequestEvent) => void,
  ): Response {
    const h = { ...head, withUsage: body.stream_options?.include_usage === true };
    const enc = new TextEncoder();
    let closed = false;
    // The client reading the stream went away (cancel), or its request was aborted: stop waiting either way.
    const gone = new AbortController();
    const stop = AbortSignal.any([signal, gone.signal]);
    const out = new ReadableStream<Uint8Array>({
      async start(ctl) {
        const send = (s: string) => {
          if (!closed) ctl.enqueue(enc.encode(s));
        };
        const keepAlive = setInterval(() => send(`: request ${head.request} in progress\n\n`), KEEP_ALIVE_MS);
        let sent = "";
        send(chunk(h, { delta: { role: "assistant", content: "" }, finish_reason: null }));
        follow.onText((delta) => {
          sent += delta;
          send(chunk(h, { delta: { content: delta }, finish_reason: null }));
        });
        // A call waiting for a person, and its decision: said in the chat, so whoever waits knows why.
        // Not part of the merge's text: `sent` stays what the answer starts with.
        const say = (line: string) => send(chunk(h, { delta: { content: line }, finish_reason: null }));
        follow.onApproval((a) =>
          say(`> waiting for approval: ${a.tool} ${a.args} on ${a.node} (${a.id}); approve with \`picoclaw approve ${a.id}\`\n\n`),
        );
        follow.onDecision((d) =>
          say(`> ${d.id}: ${d.outcome.replace("_", " ")}${d.by ? ` by ${d.by}` : ""}${d.note ? ` (${d.note})` : ""}\n\n`),
        );
        let status = 200;
        let ev: RequestEvent | undefined;
        try {
          ev = await follow.outcome(waitMs, stop);
          const c = completedFrom(ev, head, deadlineMs);
          // What the merge streamed is the answer's beginning; the rest (the sub-task status lines, or the
          // whole report when nothing streamed) follows in pieces.
          const rest = c.content.startsWith(sent) ? c.content.slice(sent.length) : `\n\n${c.content}`;
          for (const p of pieces(rest)) send(chunk(h, { delta: { content: p }, finish_reason: null }));
          send(chunk(h, { delta: {}, finish_reason: c.finishReason }));
          if (h.withUsage) send(chunk(h, undefined, c.usage));
          send("data: [DONE]\n\n");
        } catch (err) {
          if (stop.aborted) {
            status = 499;
            return;
          }
          // The status line went out with the first chunk: an error now is an `error` event, which the
          // OpenAI clients raise as an exception.
          const e = err instanceof ApiError ? err : new ApiError(502, (err as Error)?.message ?? String(err), "internal_error");
          status = e.status;
          send(sse(e.body()));
        } finally {
          clearInterval(keepAlive);
          if (status === 499) log.info("Chat client went away; the request goes on in the swarm", { request: head.request });
          ended(status, ev);
          if (!closed) {
            closed = true;
            ctl.close();
          }
        }
      },
      cancel() {
        closed = true; // the client went away: its follower and keep-alive go now, not at the deadline
        gone.abort();
      },
    });
    return new Response(out, {
      headers: { ...cors, "content-type": "text/event-stream", "cache-control": "no-cache", "x-picoclaw-request": head.request },
    });
  }
}

/** The final event as the client's answer, or the ApiError it means. */
function completedFrom(
  ev: RequestEvent | undefined,
  head: { request: string; model: string; created: number },
  deadlineMs: number,
): Completed {
  const { request } = head;
  if (!ev) {
    throw new ApiError(
      504,
      `no answer by the request's deadline of ${formatDuration(deadlineMs)} (request ${request} may still finish: picoclaw watch ${request})`,
      "deadline_exceeded",
    );
  }
  const reason = ev.error ?? "";
  if (/deadline/i.test(reason) && (ev.kind === "failed" || ev.status === "failed")) {
    throw new ApiError(504, `request ${request} passed its deadline: ${reason}`, "deadline_exceeded");
  }
  if (ev.kind === "failed") {
    if (/no online node offers|not online/.test(reason))
      throw new ApiError(503, `request ${request} rejected: ${reason}`, "capability_offline");
    throw new ApiError(400, `request ${request} rejected: ${reason}`, "request_rejected");
  }
  // Stopped at swarm.tasks.max_tokens_per_request: like a model reaching max_tokens, the answer so far with "length".
  const stopped = ev.status === "failed" && reason.startsWith("stopped:");
  if (ev.status === "failed" && !stopped) throw new ApiError(502, `request ${request} failed: ${reason}`, "request_failed");
  return {
    ...head,
    content: ev.answer ?? "",
    finishReason: stopped ? "length" : "stop",
    usage: ev.usage ?? { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
    status: ev.status,
    usageBy: ev.usage_by,
  };
}

function unavailable(err: unknown): ApiError {
  return new ApiError(503, `the swarm's NATS is not usable now: ${(err as Error)?.message ?? String(err)}`, "swarm_unavailable", null, {
    "retry-after": "5",
  });
}

/** At most `limit` bytes of body, or a 400 before reading more. */
async function readBody(req: Request, limit: number): Promise<string> {
  const tooLarge = (n: number) =>
    new ApiError(
      400,
      `the request body is larger than ${limit} bytes (4 × swarm.tasks.max_prompt_bytes; got ${n}${Number.isFinite(n) ? "" : "+"})`,
      "request_too_large",
    );
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > limit) throw tooLarge(declared);
  if (!req.body) return "";
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const part of req.body) {
    size += part.length;
    if (size > limit) throw tooLarge(size);
    parts.push(part);
  }
  return new TextDecoder().decode(Buffer.concat(parts));
}
