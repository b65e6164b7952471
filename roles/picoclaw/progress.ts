// What `submit` and `watch` show while they follow a request: on a terminal one live line per sub-task
// (title, node, state, elapsed, tokens) on stderr; otherwise a line per state change; with --json every
// event as a JSON line on stdout. The answer itself goes to stdout, printed by the command.
import type { NatsConnection } from "nats";
import { fullAnswer } from "../../lib/answers.ts";
import { formatDuration } from "../../lib/duration.ts";
import { followRequest, type StoredEvent } from "../../lib/follow.ts";
import { signerOf, verifyAnswer } from "../../lib/signing.ts";
import type { SwarmNames } from "../../lib/subjects.ts";
import type { RequestEvent, TaskEnd, TaskEvent } from "../../lib/task-messages.ts";

interface Line {
  title: string;
  node?: string;
  state: string;
  startedAt?: number;
  endedAt?: number;
  tokens: number;
}

export interface Progress {
  /** A coordinator took the request (its `accepted` or `planned` event arrived). */
  accepted(): boolean;
  /** Prints a note the way progress is printed (plain lines unless on a terminal or --json). */
  say(msg: string): void;
  /**
   * The request's final event (answer, or failed/rejected), with the whole answer text even when it was
   * too large for one message; undefined when `waitMs` passed first.
   */
  outcome(waitMs: number): Promise<RequestEvent | undefined>;
  stop(): Promise<void>;
}

/**
 * Follows `request` from the EVENTS stream (all of it, from its first event) and shows its progress.
 * With `trusted` (signing on), only an answer signed by one of those coordinator keys ends the wait: any
 * other (unsigned, untrusted, badly signed) is refused with a line on stderr and following goes on, so
 * a forged answer stored before the real one does not win.
 */
export async function followWithProgress(
  nc: NatsConnection,
  names: SwarmNames,
  request: string,
  json: boolean,
  trusted?: ReadonlySet<string>,
): Promise<Progress> {
  const tty = process.stderr.isTTY === true && !json;
  const lines = new Map<string, Line>();
  let drawn = 0;
  /** Set once the rows are drawn for the last time: the answer is printed below them, never over. */
  let frozen = false;
  let accepted = false;
  let settle: (ev: RequestEvent) => void = () => {};
  const done = new Promise<RequestEvent>((resolve) => {
    settle = resolve;
  });

  const draw = () => {
    if (!tty || frozen) return;
    const now = Date.now();
    const text = [...lines.values()].map((l) => {
      const elapsed = l.startedAt ? formatDuration((l.endedAt ?? now) - l.startedAt) : "-";
      return `  ${l.title.padEnd(24)} ${(l.node ?? "-").padEnd(15)} ${l.state.padEnd(10)} ${elapsed.padStart(7)}  ${l.tokens} tokens`;
    });
    process.stderr.write(`${drawn ? `\x1b[${drawn}A` : ""}${text.map((t) => `\x1b[2K${t}`).join("\n")}\n`);
    drawn = text.length;
  };
  const say = (msg: string) => {
    if (!json && !tty) process.stderr.write(`${msg}\n`);
  };

  const onRequest = (ev: RequestEvent, stored: StoredEvent) => {
    if (trusted && (ev.kind === "answer" || ev.kind === "failed")) {
      const verdict = verifyAnswer(stored.subject, stored.data, stored.headers, trusted);
      if (!verdict.ok) {
        const what = ev.kind === "answer" ? "an answer" : "a rejection";
        process.stderr.write(
          `picoclaw: refused ${what} on ${stored.subject} (${verdict.reason}; it names coordinator ${ev.coordinator}); still waiting for the real one\n`,
        );
        return;
      }
    }
    if (!trusted && (ev.kind === "answer" || ev.kind === "failed") && signerOf(stored.headers)) {
      // The swarm signs, this client does not check: say so rather than print it as if verified.
      process.stderr.write(
        `picoclaw: this answer is signed by ${signerOf(stored.headers)} but was NOT verified: ` +
          "set swarm.security.signing and swarm.security.trusted_coordinators to check it\n",
      );
    }
    if (json) console.log(JSON.stringify(ev));
    // `planned` alone when planning was instant: it implies `accepted`.
    if ((ev.kind === "accepted" || ev.kind === "planned") && !accepted) {
      accepted = true;
      say(`request ${request} accepted by coordinator ${ev.coordinator}`);
    }
    if (ev.kind === "planned" && ev.plan) {
      say(`planned by the ${ev.plan.planner} planner: ${ev.plan.tasks.map((t) => `${t.title} [${t.capability}]`).join(", ")}`);
      if (ev.plan.note) say(`note: ${ev.plan.note}`);
      for (const t of ev.plan.tasks) if (!lines.has(t.id)) lines.set(t.id, { title: t.title, state: "queued", tokens: 0 });
      if (tty) process.stderr.write(`request ${request}: ${ev.plan.tasks.length} sub-task(s), ${ev.plan.planner} plan\n`);
      draw();
    } else if (ev.kind === "answer" || ev.kind === "failed") {
      for (const end of ev.tasks ?? []) ended(end);
      settle(ev);
    } else if (ev.kind === "decision" && ev.decision) {
      const d = ev.decision;
      const who = d.by ? ` by ${d.by}` : "";
      process.stderr.write(`  ${d.id}: ${d.outcome.replace("_", " ")}${who}${d.note ? ` (${d.note})` : ""}\n`);
    }
  };

  /** A call waits for a person: always said (also on a terminal and with --json), with the commands that decide it. */
  const waiting = (l: Line, ev: TaskEvent) => {
    l.state = "approval";
    for (const a of ev.approvals ?? []) {
      process.stderr.write(
        `  ${l.title}: waiting for approval of ${a.tool} ${a.args} on ${ev.node} (${a.id}, times out ${new Date(a.expires_at).toISOString()})\n` +
          `    approve: picoclaw approve ${a.id} [--note TEXT]   deny: picoclaw deny ${a.id} --reason TEXT\n`,
      );
    }
  };

  /** A row the answer says has ended, where no task event said so (they are live: `watch` after the fact). */
  const ended = (end: TaskEnd) => {
    const l = lines.get(end.id);
    if (!l || l.state === "completed" || l.state === "failed") return;
    l.state = end.status;
    l.node = end.node ?? l.node;
    l.startedAt = end.started_at ?? l.startedAt;
    l.endedAt = end.finished_at ?? l.endedAt;
    l.tokens = end.tokens ?? l.tokens;
    say(`  ${l.title}: ${l.state}${end.node ? ` on ${end.node}` : ""}`);
    draw();
  };

  const onTask = (ev: TaskEvent) => {
    if (json) console.log(JSON.stringify(ev));
    const l = lines.get(ev.task) ?? { title: ev.task, state: "queued", tokens: 0 };
    lines.set(ev.task, l);
    const before = l.state;
    l.node = ev.node;
    if (ev.kind === "started") {
      l.state = ev.attempt > 1 ? `running#${ev.attempt}` : "running";
      l.startedAt = ev.at;
      l.endedAt = undefined;
    } else if (ev.kind === "progress") l.tokens = ev.tokens ?? l.tokens;
    else if (ev.kind === "tool") {
      // `code review: exec "bun test" on claw-x, 1.2s, ok`: each tool call as it ends.
      say(`  ${l.title}: ${ev.tool} ${ev.args ?? ""} on ${ev.node}, ${formatDuration(ev.elapsed_ms ?? 0)}, ${ev.outcome ?? "ok"}`);
    } else if (ev.kind === "retrying") l.state = "retrying";
    else if (ev.kind === "approval") waiting(l, ev);
    else if (ev.kind === "completed") {
      l.state = "completed";
      // The recorded result, as the answer reports it: its run time on the node and all its tokens.
      if (ev.result) {
        l.startedAt = ev.result.started_at;
        l.endedAt = ev.result.finished_at;
        l.tokens = ev.result.usage.total_tokens;
      } else {
        l.endedAt = ev.at;
        l.tokens = ev.tokens ?? l.tokens;
      }
    } else if (ev.kind === "failed") {
      l.state = "failed";
      l.endedAt = ev.at;
    }
    if (l.state !== before) {
      const extra = ev.error ? `: ${ev.error}` : ev.kind === "completed" ? ` ${completedIn(ev)}` : "";
      say(`  ${l.title}: ${l.state} on ${ev.node}${extra}`);
    }
    draw();
  };

  const follower = await followRequest(nc, names, request, { request: onRequest, task: onTask });
  const ticker = tty ? setInterval(draw, 500) : undefined;
  /** The last draw, before the command prints anything else (it goes to the same terminal). */
  const freeze = async (ended: boolean) => {
    clearInterval(ticker);
    if (frozen) return;
    // Task events come from their own consumer: let rows still open catch up (watch of a done request).
    const open = () => [...lines.values()].some((l) => l.state !== "completed" && l.state !== "failed");
    for (let waited = 0; tty && ended && open() && waited < FINAL_ROWS_WAIT_MS; waited += 50) await Bun.sleep(50);
    draw();
    frozen = true;
  };
  return {
    accepted: () => accepted,
    say,
    async outcome(waitMs) {
      let timer: Timer | undefined;
      const ev = await Promise.race([
        done,
        new Promise<undefined>((resolve) => {
          timer = setTimeout(resolve, waitMs);
        }),
      ]);
      clearTimeout(timer);
      await freeze(ev !== undefined);
      return ev?.answer_ref ? { ...ev, answer: await fullAnswer(nc, names, ev) } : ev;
    },
    async stop() {
      await freeze(false);
      await follower.stop();
    },
  };
}

/** How long the final rows wait for sub-task events still on their way once the request has ended. */
const FINAL_ROWS_WAIT_MS = 1_000;

/** Which time a sub-task's duration is: the same words as in the answer (roles/coordinator/synthesis.ts). */
const RUN_TIME = "(run time on the node)";

/**
 * `in 14ms (run time on the node), 231 tokens`: the same time and tokens the answer reports for the
 * sub-task (its recorded result: finished_at - started_at, usage.total_tokens). An event without the
 * result (from an older node) has only its own elapsed time and the completion tokens.
 */
export function completedIn(ev: TaskEvent): string {
  const r = ev.result;
  if (r) return `in ${formatDuration(r.finished_at - r.started_at)} ${RUN_TIME}, ${r.usage.total_tokens} tokens`;
  return `in ${formatDuration(ev.elapsed_ms ?? 0)} (on the node), ${ev.tokens ?? 0} completion tokens`;
}
