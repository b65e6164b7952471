// `picoclaw submit`: publish a request, follow its events (one live line per sub-task), print the answer.
import { readFileSync } from "node:fs";
import { RequestStrategy } from "nats";
import type { Cli } from "../../lib/cli.ts";
import { openClient } from "../../lib/client.ts";
import type { Config } from "../../lib/config.ts";
import { formatDuration, parseDuration } from "../../lib/duration.ts";
import { ConfigError } from "../../lib/errors.ts";
import { isValidId, newRequestId } from "../../lib/ids.ts";
import type { Logger } from "../../lib/log.ts";
import { decode, encode, nodeInfoSchema } from "../../lib/messages.ts";
import { parsePlanText } from "../../lib/plan.ts";
import { ensureStreams } from "../../lib/streams.ts";
import {
  MAX_PIPELINE_MESSAGE_BYTES,
  type RequestEvent,
  type RequestMsg,
  requestEventSchema,
  type TaskEvent,
  taskEventSchema,
} from "../../lib/task-messages.ts";

export interface SubmitOptions {
  text: string;
  /** Parsed plan file (validated by the coordinator against the swarm). */
  plan?: unknown;
  capabilities?: string[];
  json: boolean;
  timeoutMs: number;
}

interface Line {
  title: string;
  node?: string;
  state: string;
  startedAt?: number;
  endedAt?: number;
  tokens: number;
}

const NO_COORDINATOR_CHECK_MS = 3_000;

/** Exit code: 0 answered (completed or partial), 1 failed or rejected, 3 no answer in time. */
export async function runSubmit(cfg: Config, log: Logger, o: SubmitOptions): Promise<number> {
  const client = await openClient(cfg, log, "picoclaw-submit");
  const nc = client.link.nc;
  try {
    const { identity, names } = client;
    await ensureStreams(nc, names, cfg);
    const request = newRequestId();
    const tty = process.stderr.isTTY === true && !o.json;
    const lines = new Map<string, Line>();
    let drawn = 0;
    let accepted = false;

    const draw = () => {
      if (o.json) return;
      const now = Date.now();
      const text = [...lines.values()].map((l) => {
        const elapsed = l.startedAt ? formatDuration((l.endedAt ?? now) - l.startedAt) : "-";
        return `  ${l.title.padEnd(24)} ${(l.node ?? "-").padEnd(15)} ${l.state.padEnd(10)} ${elapsed.padStart(7)}  ${l.tokens} tokens`;
      });
      if (tty) {
        process.stderr.write(`${drawn ? `\x1b[${drawn}A` : ""}${text.map((t) => `\x1b[2K${t}`).join("\n")}\n`);
        drawn = text.length;
      }
    };
    const say = (msg: string) => {
      if (!o.json && !tty) process.stderr.write(`${msg}\n`);
    };

    const outcome = new Promise<RequestEvent>((resolve) => {
      nc.subscribe(names.requestEvents(request), {
        callback: (_e, m) => {
          const d = decode(requestEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
          if (!d.ok) return;
          const ev = d.value;
          if (o.json) console.log(JSON.stringify(ev));
          // `planned` alone when planning was instant: it implies `accepted`.
          if ((ev.kind === "accepted" || ev.kind === "planned") && !accepted) {
            accepted = true;
            say(`request ${request} accepted by coordinator ${ev.coordinator}`);
          }
          if (ev.kind === "planned" && ev.plan) {
            say(`planned by the ${ev.plan.planner} planner: ${ev.plan.tasks.map((t) => `${t.title} [${t.capability}]`).join(", ")}`);
            if (ev.plan.note) say(`note: ${ev.plan.note}`);
            for (const t of ev.plan.tasks) lines.set(t.id, { title: t.title, state: "queued", tokens: 0 });
            if (tty) process.stderr.write(`request ${request}: ${ev.plan.tasks.length} sub-task(s), ${ev.plan.planner} plan\n`);
            draw();
          } else if (ev.kind === "answer" || ev.kind === "failed") resolve(ev);
        },
      });
      nc.subscribe(names.taskEventsOf(request), {
        callback: (_e, m) => {
          const d = decode(taskEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
          if (!d.ok) return;
          const ev: TaskEvent = d.value;
          if (o.json) console.log(JSON.stringify(ev));
          const l = lines.get(ev.task) ?? { title: ev.task, state: "queued", tokens: 0 };
          lines.set(ev.task, l);
          const before = l.state;
          l.node = ev.node;
          if (ev.kind === "started") {
            l.state = ev.attempt > 1 ? `running#${ev.attempt}` : "running";
            l.startedAt = ev.at;
            l.endedAt = undefined;
          } else if (ev.kind === "progress") l.tokens = ev.tokens ?? l.tokens;
          else if (ev.kind === "retrying") l.state = "retrying";
          else if (ev.kind === "completed") {
            l.state = "completed";
            l.endedAt = ev.at;
            l.tokens = ev.tokens ?? l.tokens;
          } else if (ev.kind === "failed") {
            l.state = "failed";
            l.endedAt = ev.at;
          }
          if (l.state !== before) {
            const extra = ev.error
              ? `: ${ev.error}`
              : ev.kind === "completed"
                ? ` in ${formatDuration(ev.elapsed_ms ?? 0)}, ${l.tokens} tokens`
                : "";
            say(`  ${l.title}: ${l.state} on ${ev.node}${extra}`);
          }
          draw();
        },
      });
    });
    const ticker = tty ? setInterval(draw, 500) : undefined;

    const msg: RequestMsg = { v: 1, request, text: o.text, plan: o.plan, capabilities: o.capabilities, submitted_at: Date.now() };
    await nc.flush();
    await publishWithRetry(() => nc.jetstream().publish(names.requestSubmit, encode(msg), { msgID: request }));
    say(`submitted request ${request} to swarm ${identity.hid}`);

    const warnTimer = setTimeout(async () => {
      if (accepted) return;
      if ((await countCoordinators(nc, names.query, identity.node)) === 0) {
        process.stderr.write(
          `waiting: no coordinator is online in swarm ${identity.hid}; the request stays queued and is answered when one starts\n`,
        );
      }
    }, NO_COORDINATOR_CHECK_MS);

    const ev = await Promise.race([outcome, Bun.sleep(o.timeoutMs).then(() => undefined)]);
    clearTimeout(warnTimer);
    clearInterval(ticker);
    draw();
    if (!ev) {
      process.stderr.write(
        `picoclaw: no answer to request ${request} within ${formatDuration(o.timeoutMs)}; it stays queued or in progress in the swarm\n`,
      );
      return 3;
    }
    if (ev.kind === "failed") {
      process.stderr.write(`picoclaw: request ${request} rejected: ${ev.error}\n`);
      return 1;
    }
    if (!o.json) console.log(ev.answer ?? "");
    if (ev.status === "failed") process.stderr.write(`picoclaw: request ${request} failed: ${ev.error}\n`);
    return ev.status === "failed" ? 1 : 0;
  } finally {
    await client.close();
  }
}

/** The request id is the dedupe id, so publishing again after a lost reply cannot queue it twice. */
async function publishWithRetry(publish: () => Promise<unknown>, attempts = 5): Promise<void> {
  for (let i = 1; ; i++) {
    try {
      await publish();
      return;
    } catch (err) {
      if (i >= attempts) throw new Error(`the request could not be stored in JetStream after ${attempts} tries: ${(err as Error).message}`);
      await Bun.sleep(500 * i);
    }
  }
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
  if (!text) throw new ConfigError("submit", "command line", "a request text, '-' for stdin, --file PATH or --plan PATH");
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
  const timeoutText = cli.value("timeout") ?? "10m";
  const timeoutMs = parseDuration(timeoutText);
  if (timeoutMs === undefined || timeoutMs <= 0)
    throw new ConfigError("--timeout", "command line", "a duration like 30s or 10m", timeoutText);
  return { text, plan, capabilities: caps, json: cli.is("json"), timeoutMs };
}
