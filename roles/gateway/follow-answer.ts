// Following one request for a gateway client (a chat, an A2A task): the coordinator's merge as it streams,
// the tool calls that wait for a person and their decisions, and the final answer or rejection.
import { fullAnswer } from "../../lib/answers.ts";
import { followRequest } from "../../lib/follow.ts";
import { decode } from "../../lib/messages.ts";
import type { SwarmNode } from "../../lib/node.ts";
import { verifyAnswer } from "../../lib/signing.ts";
import { MAX_PIPELINE_MESSAGE_BYTES, type PendingNotice, type RequestEvent, taskEventSchema } from "../../lib/task-messages.ts";
import { ApiError } from "./openai.ts";

/** A call waiting for approval, with the node that asked. */
export type WaitingCall = PendingNotice & { node: string; task: string };
export type DecisionNote = NonNullable<RequestEvent["decision"]>;

export interface AnswerFollower {
  /** Each next piece of the merge's text, in order (gaps end it: the answer carries the whole text). */
  onText(fn: (delta: string) => void): void;
  /** Each tool call that parks its sub-task waiting for approval. */
  onApproval(fn: (call: WaitingCall) => void): void;
  /** Each decision on one of them. */
  onDecision(fn: (d: DecisionNote) => void): void;
  /** The final event; undefined when `waitMs` passed or `signal` ended the wait first. */
  outcome(waitMs: number, signal: AbortSignal): Promise<RequestEvent | undefined>;
  stop(): Promise<void>;
}

/**
 * Follows one request's events from the EVENTS stream (ordered consumer: a reconnect loses nothing). With
 * `trusted` (signing on), an answer, rejection or streamed piece that a trusted coordinator did not sign
 * is refused (logged, counted) and following goes on, so a forgery stored first does not win.
 */
export async function followAnswer(node: SwarmNode, request: string, trusted?: ReadonlySet<string>): Promise<AnswerFollower> {
  let text: ((delta: string) => void) | undefined;
  let approval: ((call: WaitingCall) => void) | undefined;
  let decision: ((d: DecisionNote) => void) | undefined;
  let nextSeq = 0;
  let settle: (ev: RequestEvent) => void = () => {};
  const done = new Promise<RequestEvent>((resolve) => {
    settle = resolve;
  });
  const follower = await followRequest(node.link.nc, node.names, request, {
    request(ev, stored) {
      const matters = ev.kind === "answer_delta" || ev.kind === "answer" || ev.kind === "failed";
      if (trusted && matters) {
        const verdict = verifyAnswer(stored.subject, stored.data, stored.headers, trusted);
        if (!verdict.ok) {
          node.bad.refuse(stored.subject, "answer", `${ev.kind}: ${verdict.reason}`);
          node.log.warn("Answer refused", { request, kind: ev.kind, coordinator: ev.coordinator, reason: verdict.reason });
          return;
        }
      }
      if (ev.kind === "answer_delta") {
        if (ev.seq === nextSeq && ev.delta !== undefined) {
          nextSeq++;
          text?.(ev.delta);
        } else nextSeq = Number.POSITIVE_INFINITY;
      } else if (ev.kind === "answer" || ev.kind === "failed") settle(ev);
      else if (ev.kind === "decision" && ev.decision) decision?.(ev.decision);
    },
    bad: (subject, reason) => node.bad.record(subject, reason),
  });
  // Calls that wait for a person: heard as their sub-tasks park (a plain subscription, no consumer per chat).
  const parked = node.link.nc.subscribe(node.names.taskEventsOf(request), {
    callback: (_e, m) => {
      const d = decode(taskEventSchema, m.data, MAX_PIPELINE_MESSAGE_BYTES);
      if (!d.ok || d.value.kind !== "approval") return;
      for (const a of d.value.approvals ?? []) approval?.({ ...a, node: d.value.node, task: d.value.task });
    },
  });
  return {
    onText(fn) {
      text = fn;
    },
    onApproval(fn) {
      approval = fn;
    },
    onDecision(fn) {
      decision = fn;
    },
    async outcome(waitMs, signal) {
      let timer: Timer | undefined;
      let onAbort: (() => void) | undefined;
      const ev = await Promise.race([
        done,
        new Promise<undefined>((resolve) => {
          timer = setTimeout(resolve, waitMs);
          onAbort = () => resolve(undefined);
          signal.addEventListener("abort", onAbort, { once: true });
        }),
      ]);
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener("abort", onAbort);
      if (!ev?.answer_ref) return ev;
      // Too large for one message: the event has its start, the answers object store the whole.
      try {
        return { ...ev, answer: await fullAnswer(node.link.nc, node.names, ev) };
      } catch (err) {
        throw new ApiError(
          502,
          `request ${request} was answered, but its answer cannot be read: ${(err as Error).message}`,
          "answer_unreadable",
        );
      }
    },
    stop: () => {
      parked.unsubscribe();
      return follower.stop();
    },
  };
}
