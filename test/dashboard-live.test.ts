// The web dashboard's request view is fed by events anyone on the swarm's subjects can publish: what it
// holds stays bounded whether or not a page is looking (issue: pruning happened only when one did).
import { expect, test } from "bun:test";
import type { TaskEvent } from "../lib/task-messages.ts";
import { createLiveRequests } from "../roles/dashboard/live.ts";

const ev = (request: string, task: string, at: number): TaskEvent => ({
  v: 1,
  request,
  task,
  kind: "started",
  node: "claw-00000001",
  capability: "general",
  at,
  attempt: 1,
});

test("20 000 forged task events with random request ids, no page open: at most twice the request cap is held", () => {
  const live = createLiveRequests({ maxRequests: 50 });
  const now = Date.now();
  for (let i = 0; i < 20_000; i++) live.onTask(ev(`r-${i.toString(16).padStart(10, "0")}`, "t1", now + i));
  expect(live.size().requests).toBeLessThanOrEqual(100);
  // The newest are what a page then sees.
  const view = live.view(now + 20_000);
  expect(view.requests.length).toBe(50);
  expect(view.requests[0]!.request).toBe(`r-${(19_999).toString(16).padStart(10, "0")}`);
});

test("one request with 5 000 made-up sub-task ids keeps at most 1 024 of them, and later events of a kept one still land", () => {
  const live = createLiveRequests();
  const now = Date.now();
  for (let i = 0; i < 5_000; i++) live.onTask(ev("r-0000000001", `t${i}`, now));
  expect(live.size().tasks).toBe(1024);
  live.onTask({ ...ev("r-0000000001", "t7", now + 1), kind: "completed", tokens: 9 });
  const t7 = live.view(now + 2).requests[0]!.tasks.find((t) => t.id === "t7")!;
  expect(t7.state).toBe("completed");
  expect(t7.tokens).toBe(9);
});
