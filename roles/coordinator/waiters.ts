// Sub-task events routed to whoever waits for that one sub-task (Temporal's sub-task activities): the
// coordinator subscribes to every task event once and hands each to its waiter.
import type { TaskEvent } from "../../lib/task-messages.ts";

/** Sub-task events routed to the activities waiting for them (the coordinator subscribes once for all). */
export interface SubTaskWaiters {
  onTaskEvent(ev: TaskEvent): void;
  wait(request: string, task: string, on: (ev: TaskEvent) => void): () => void;
}

export function subTaskWaiters(): SubTaskWaiters {
  const waiting = new Map<string, (ev: TaskEvent) => void>();
  return {
    onTaskEvent: (ev) => waiting.get(`${ev.request}/${ev.task}`)?.(ev),
    wait(request, task, on) {
      const key = `${request}/${task}`;
      waiting.set(key, on);
      return () => waiting.delete(key);
    },
  };
}
