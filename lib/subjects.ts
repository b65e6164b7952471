// Protocol v1 names. The only module that spells a NATS subject, stream or KV bucket name.
// Every id is validated before it becomes a subject token (see ids.ts).
import { validateId } from "./ids.ts";

const ROOT = "picoclaw";

/** Bucket shared by every swarm on one NATS deployment: holds the adopted default H-id. */
export const SWARM_BUCKET = "picoclaw_swarm";
export const DEFAULT_HID_KEY = "default_hid";

/** Subject and storage names for one swarm (one H-id). Plain data, built once per node. */
export interface SwarmNames {
  hid: string;
  prefix: string;
  heartbeat(node: string): string;
  heartbeatAll: string;
  announce: string;
  query: string;
  control(node: string): string;
  requestSubmit: string;
  requestEvents(request: string): string;
  requestEventsAll: string;
  taskQueue(capability: string, priority: number): string;
  /** Every priority of one capability (the executor's doorbell). */
  taskQueueAnyPriority(capability: string): string;
  taskDirect(node: string): string;
  /**
   * Stored events of one sub-task (sub-task ids are unique within their request): the last attempt's
   * `started` and the coordinator's `failed` when it gives one up. Everything else is live.
   */
  taskEvents(request: string, task: string): string;
  taskEventsOf(request: string): string;
  taskEventsAll: string;
  /**
   * What a node says of a sub-task as it runs, never stored (no stream captures `live.>`): `started`,
   * `progress`, each tool call as it ends, `retrying`, and its outcome (`completed` with the result that
   * is stored once, in KV). Followers of a request listen on `taskLiveOf` besides its stored events;
   * the coordinator and the dashboards on `taskLiveAll`.
   */
  taskLive(request: string, task: string): string;
  taskLiveOf(request: string): string;
  taskLiveAll: string;
  /** Everything of this swarm: for observers and isolation checks. */
  all: string;
  streams: { requests: string; tasks: string; events: string; nodes: string };
  streamSubjects: { requests: string[]; tasks: string[]; events: string[]; nodes: string[] };
  /** `tokens`: the swarm's LLM token budget, one key per window (swarm.llm.tokens_per_minute). */
  buckets: { tasks: string; leader: string; context: string; answers: string; tokens: string };
  /** The JetStream stream behind a KV bucket (what a NATS user needs rights on to create it). */
  kvStream(bucket: string): string;
  consumers: {
    /** Shared by every node that can run `capability` tasks of `priority`. */
    queue(capability: string, priority: number): string;
    direct(node: string): string;
    /** The leading coordinator's request consumer. */
    requests: string;
    /** What a TASKS consumer name is for, or undefined when it is none of ours. */
    parse(name: string): { kind: "queue"; capability: string; priority: number } | { kind: "direct"; node: string } | undefined;
  };
  /** JetStream's advisory when a sub-task used up max_deliver (the coordinator fails it). */
  maxDeliveriesAdvisory: string;
  /** The coordinator lease key in the leader bucket. */
  leaderKey: string;
}

/** Sub-task priorities: 0 (low) .. 3 (urgent); 1 is the default. */
export const PRIORITIES = [3, 2, 1, 0] as const;

export function swarmNames(hid: string): SwarmNames {
  validateId("H-id", hid);
  const p = `${ROOT}.${hid}`;
  // The H-id goes into stream and bucket names unchanged (both allow A-Z a-z 0-9 _ -): folding case or
  // '-' to '_' would give distinct swarms ("team-a", "team_a", "PROD", "prod") the same streams and KV.
  const streamHid = hid;
  const bucketHid = hid;
  return {
    hid,
    prefix: p,
    heartbeat: (node) => `${p}.node.heartbeat.${validateId("node id", node)}`,
    heartbeatAll: `${p}.node.heartbeat.*`,
    announce: `${p}.node.announce`,
    query: `${p}.node.query`,
    control: (node) => `${p}.node.${validateId("node id", node)}.control`,
    requestSubmit: `${p}.request.submit`,
    requestEvents: (req) => `${p}.event.request.${validateId("request id", req)}`,
    requestEventsAll: `${p}.event.request.*`,
    taskQueue: (cap, prio) => {
      if (!Number.isInteger(prio) || prio < 0 || prio > 3) {
        throw new RangeError(`task priority must be an integer 0-3, got ${prio}`);
      }
      return `${p}.task.queue.${validateId("capability", cap)}.${prio}`;
    },
    taskQueueAnyPriority: (cap) => `${p}.task.queue.${validateId("capability", cap)}.*`,
    taskDirect: (node) => `${p}.task.direct.${validateId("node id", node)}`,
    taskEvents: (req, task) => `${p}.event.task.${validateId("request id", req)}.${validateId("task id", task)}`,
    taskEventsOf: (req) => `${p}.event.task.${validateId("request id", req)}.*`,
    taskEventsAll: `${p}.event.task.*.*`,
    taskLive: (req, task) => `${p}.live.task.${validateId("request id", req)}.${validateId("task id", task)}`,
    taskLiveOf: (req) => `${p}.live.task.${validateId("request id", req)}.*`,
    taskLiveAll: `${p}.live.task.*.*`,
    all: `${p}.>`,
    streams: {
      requests: `PICOCLAW_${streamHid}_REQUESTS`,
      tasks: `PICOCLAW_${streamHid}_TASKS`,
      events: `PICOCLAW_${streamHid}_EVENTS`,
      /** Each node's last heartbeat (one per subject): a dashboard started later still knows who went silent. */
      nodes: `PICOCLAW_${streamHid}_NODES`,
    },
    streamSubjects: {
      requests: [`${p}.request.>`],
      tasks: [`${p}.task.>`],
      events: [`${p}.event.>`],
      nodes: [`${p}.node.heartbeat.*`],
    },
    buckets: {
      tasks: `picoclaw_${bucketHid}_tasks`,
      leader: `picoclaw_${bucketHid}_leader`,
      context: `picoclaw_${bucketHid}_context`,
      /** Object store: answers too large for one message. */
      answers: `picoclaw_${bucketHid}_answers`,
      tokens: `picoclaw_${bucketHid}_tokens`,
    },
    kvStream: (bucket) => `KV_${bucket}`,
    maxDeliveriesAdvisory: `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PICOCLAW_${streamHid}_TASKS.*`,
    leaderKey: "coordinator",
    consumers: {
      queue: (cap, prio) => `q_${validateId("capability", cap)}_${prio}`,
      direct: (node) => `d_${validateId("node id", node)}`,
      requests: "coordinator",
      parse(name) {
        const q = /^q_([A-Za-z0-9_-]{1,64})_([0-3])$/.exec(name);
        if (q) return { kind: "queue", capability: q[1]!, priority: Number(q[2]) };
        const d = /^d_([A-Za-z0-9_-]{1,64})$/.exec(name);
        return d ? { kind: "direct", node: d[1]! } : undefined;
      },
    },
  };
}

/** Reply subjects of a swarm's clients: `_INBOX_<hid>.…`, so NATS permissions can give each H-id its own. */
export function inboxPrefix(hid: string): string {
  return `_INBOX_${validateId("H-id", hid)}`;
}

/** JetStream's "next messages" API of a pull consumer (the request a pull sends). */
export function consumerNextSubject(stream: string, durable: string): string {
  return `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`;
}

/** Task-record keys in the tasks KV bucket (keys may contain dots; ids may not). */
export const taskKeys = {
  request: (req: string) => `request.${req}`,
  /** Every request record: `picoclaw requests` lists them. */
  requestAll: "request.*",
  result: (req: string, task: string) => `result.${req}.${task}`,
  errors: (req: string, task: string) => `errors.${req}.${task}`,
  /** Step `n` (1, 2, ...) of a sub-task's tool loop: a model turn or a tool result. */
  step: (req: string, task: string, n: number) => `step.${req}.${task}.${n}`,
  /** A tool call waiting for a person (created once by the worker that asked). */
  approval: (id: string) => `approval.${id}`,
  /** Every pending call: `picoclaw approvals` lists them. */
  approvalAll: "approval.*",
  /** The one decision on call `id` (created once: the server refuses a second). */
  decision: (id: string) => `decision.${id}`,
  decisionAll: "decision.*",
  /** How often handling a request failed (not counting hand-overs between coordinators). */
  failures: (req: string) => `failures.${req}`,
  /** A request given up after repeated failures: `picoclaw requests --failed` lists these. */
  dead: (req: string) => `dead.${req}`,
  deadAll: "dead.*",
};

/** The subject a KV entry is stored under (`$KV.<bucket>.<key>`): how a bad record is named in counts and logs. */
export function kvSubject(bucket: string, key: string): string {
  return `$KV.${bucket}.${key}`;
}

/** The token budget's key for window number `window` (time ÷ window length). */
export function tokenWindowKey(window: number): string {
  return `w.${window}`;
}

/** `node.<id>.control` has a node id in the third token; heartbeats in the fourth. */
export function nodeIdFromHeartbeat(names: SwarmNames, subject: string): string | undefined {
  const head = `${names.prefix}.node.heartbeat.`;
  return subject.startsWith(head) ? subject.slice(head.length) : undefined;
}
