// `picoclaw submit`: store a request in the swarm's REQUESTS queue (retrying through an outage until
// JetStream has it), follow its events from the EVENTS stream, print the answer.
import { readFileSync } from "node:fs";
import { RequestStrategy } from "nats";
import { type Cli, EXIT } from "../../lib/cli.ts";
import type { Config } from "../../lib/config.ts";
import { formatDuration, parseDuration } from "../../lib/duration.ts";
import { ConfigError, UsageError } from "../../lib/errors.ts";
import { isValidId, newRequestId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { decode, encode, nodeInfoSchema } from "../../lib/messages.ts";
import { isTransientNatsError } from "../../lib/nats-connection.ts";
import { parsePlanText } from "../../lib/plan.ts";
import { storeRequest } from "../../lib/requests.ts";
import { NATS_BACKOFF, withRetry } from "../../lib/retry.ts";
import { trustedAnswerKeys } from "../../lib/signing.ts";
import { ensureStreams } from "../../lib/streams.ts";
import type { RequestEvent, RequestMsg } from "../../lib/task-messages.ts";
import { openClient } from "./client.ts";
import { followWithProgress, type Progress } from "./progress.ts";

export interface SubmitOptions {
  text: string;
  /** Parsed plan file (validated by the coordinator against the swarm). */
  plan?: unknown;
  capabilities?: string[];
  json: boolean;
  /** --timeout: the request's own deadline (shorter than swarm.tasks.request_timeout), and how long we wait. */
  timeoutMs?: number;
}

const NO_COORDINATOR_CHECK_MS = 3_000;
/** After the deadline, the coordinator answers the request as failed: wait that long for it. */
const DEADLINE_ANSWER_GRACE_MS = 10_000;

/**
 * Exit status: 0 answered (completed or partial), 1 failed or rejected, 3 no answer in time,
 * 4 NATS unreachable or the request could not be stored.
 */
export async function runSubmit(cfg: Config, log: Logger, o: SubmitOptions): Promise<number> {
  const trusted = trustedAnswerKeys(cfg);
  const client = await openClient(cfg, log, "picoclaw-submit");
  const nc = client.link.nc;
  const { identity, names } = client;
  const waitMs = (o.timeoutMs ?? cfg.swarm.tasks.request_timeout) + DEADLINE_ANSWER_GRACE_MS;
  let progress: Progress | undefined;
  try {
    const request = newRequestId();
    // Following first costs nothing extra: the events come from the stream, from the request's first one.
    // Both steps talk to JetStream, which may be restarting: they are retried until the wait is over.
    progress = await withRetry(
      async () => {
        await ensureStreams(nc, names, cfg, undefined, "client");
        return followWithProgress(nc, names, request, o.json, trusted);
      },
      {
        backoff: NATS_BACKOFF,
        untilMs: waitMs,
        retryable: isTransientNatsError,
        onRetry: (err, attempt) => {
          if (attempt === 1 || attempt % 10 === 0)
            warn(`JetStream is not ready to keep and follow the request yet (${(err as Error).message}); trying again`);
        },
      },
    );
    const msg: RequestMsg = {
      v: 1,
      request,
      text: o.text,
      plan: o.plan,
      capabilities: o.capabilities,
      submitted_at: Date.now(),
      timeout_ms: o.timeoutMs,
    };
    const said = progress;
    await storeRequest(nc, names, msg, {
      untilMs: waitMs,
      onRetry: (err, attempt) => {
        if (attempt === 1 || attempt % 10 === 0) warn(`NATS did not store the request yet (${(err as Error).message}); trying again`);
      },
    });
    progress.say(`submitted request ${request} to swarm ${identity.hid}`);

    const warnTimer = setTimeout(async () => {
      if (said.accepted()) return;
      if ((await countCoordinators(nc, names.query, identity.node)) === 0) {
        process.stderr.write(
          `waiting: no coordinator is online in swarm ${identity.hid}; the request stays queued and is answered when one starts\n`,
        );
      }
    }, NO_COORDINATOR_CHECK_MS);
    const ev = await progress.outcome(waitMs);
    clearTimeout(warnTimer);
    return report(request, ev, o.json, waitMs);
  } finally {
    await progress?.stop();
    await client.close();
  }
}

/** A wait the user should know about, on stderr also with --json (stdout stays the events). */
function warn(msg: string): void {
  process.stderr.write(`waiting: ${msg}\n`);
}

/** Prints the outcome (the answer to stdout) and returns the exit status. */
export function report(request: string, ev: RequestEvent | undefined, json: boolean, waitedMs: number): number {
  if (!ev) {
    process.stderr.write(
      `picoclaw: no answer to request ${request} within ${formatDuration(waitedMs)}; it may still be queued or in progress (follow it with: picoclaw watch ${request})\n`,
    );
    return EXIT.noAnswer;
  }
  if (ev.kind === "failed") {
    process.stderr.write(`picoclaw: request ${request} rejected: ${ev.error}\n`);
    return EXIT.failed;
  }
  if (!json) console.log(ev.answer ?? "");
  if (ev.status === "failed") process.stderr.write(`picoclaw: request ${request} failed: ${ev.error}\n`);
  return ev.status === "failed" ? EXIT.failed : EXIT.ok;
}

async function countCoordinators(nc: import("nats").NatsConnection, subject: string, from: string): Promise<number> {
  let n = 0;
  try {
    const replies = await nc.requestMany(subject, encode({ v: 1, from }), { strategy: RequestStrategy.Timer, maxWait: 500 });
    for await (const m of replies) {
      const d = decode(nodeInfoSchema, m.data);
      if (d.ok && d.value.role === "coordinator") n++;
    }
  } catch {
    // no responders: nobody at all
  }
  return n;
}

/** `submit` arguments: text (or '-' for stdin), --file, --plan, --capabilities, --timeout, --json. */
export async function submitOptions(cli: Cli, maxPromptBytes: number): Promise<SubmitOptions> {
  let text = cli.positionals.join(" ").trim();
  if (text === "-") text = (await Bun.stdin.text()).trim();
  const file = cli.value("file");
  if (file !== undefined) {
    let body: string;
    try {
      body = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError("--file", "command line", "a readable file", `${file} (${(err as Error).message})`);
    }
    text = text ? `${text}\n\n--- ${file} ---\n${body}` : `Review this change (${file}):\n\n${body}`;
  }
  const planPath = cli.value("plan");
  let plan: unknown;
  if (planPath !== undefined) {
    let raw: string;
    try {
      raw = readFileSync(planPath, "utf8");
    } catch (err) {
      throw new ConfigError("--plan", "command line", "a readable YAML or JSON plan file", `${planPath} (${(err as Error).message})`);
    }
    plan = parsePlanText(raw, planPath);
    if (!text) text = `Plan ${planPath}`;
  }
  if (!text) throw new UsageError("no request: give its text, '-' to read it from stdin, --file PATH or --plan PATH");
  const size = new TextEncoder().encode(text).length;
  if (size > maxPromptBytes) {
    throw new ConfigError(
      "submit",
      "command line",
      `a request of at most swarm.tasks.max_prompt_bytes (${maxPromptBytes} bytes); raise that key on the coordinator and here, or send less`,
      `${size} bytes`,
    );
  }
  const caps = cli
    .value("capabilities")
    ?.split(",")
    .map((c) => c.trim())
    .filter((c) => c !== "");
  for (const c of caps ?? []) {
    if (!isValidId(c))
      throw new ConfigError("--capabilities", "command line", "capability names of 1-64 characters from A-Z a-z 0-9 _ -", c);
  }
  return { text, plan, capabilities: caps, json: cli.is("json"), timeoutMs: timeoutOption(cli) };
}

/** `--timeout 10m`, or undefined when not given. */
export function timeoutOption(cli: Cli): number | undefined {
  const text = cli.value("timeout");
  if (text === undefined) return undefined;
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) throw new ConfigError("--timeout", "command line", "a duration like 30s or 10m", text);
  return ms;
}
