// Temporal mode: a workflow worker inside the coordinator runs request workflows (any coordinator's
// worker, leader or standby, continues a workflow another one started), and the leader starts one per
// request it takes from the REQUESTS queue. Connect first: a worker created without a live connection
// would hang the process when the server is away.
import type { Logger } from "../../../lib/log.ts";
import type { RequestMsg } from "../../../lib/task-messages.ts";
import { describeTemporalError, PROMISE_HOOKS_WARNING, type TemporalSettings } from "../../../lib/temporal.ts";
import type { DecisionSignal, RequestActivities } from "./types.ts";

export interface TemporalRunner {
  address: string;
  /** The worker runs and the server answers (checked every few seconds): new requests go to Temporal. */
  polling(): boolean;
  /** Starts the request's workflow (id = request id); an existing one with that id counts as started. */
  start(msg: RequestMsg, deadlineAt: number): Promise<void>;
  /** Workflows on this task queue now running, and finished (from Temporal's visibility), when known. */
  counts(): { running?: number; completed?: number };
  /** Tells request `request`'s workflow that a person decided one of its waiting calls (no workflow: nothing). */
  signalDecision(request: string, d: DecisionSignal): Promise<void>;
  stop(): Promise<void>;
}

const CONNECT_TIMEOUT_MS = 5_000;
const PROBE_EVERY_MS = 2_000;
const PROBE_TIMEOUT_MS = 1_500;

/** Never throws: an unreachable Temporal logs the guide's warning and the coordinator runs without it. */
export async function startTemporal(
  s: TemporalSettings,
  o: { identity: string; activities: RequestActivities; maxActivities: number; log: Logger },
): Promise<TemporalRunner | undefined> {
  const { log } = o;
  try {
    const { NativeConnection, Runtime, Worker } = await import("@temporalio/worker");
    const { Client, Connection } = await import("@temporalio/client");
    installRuntime(Runtime, log, s.address);
    const native = await deadline(NativeConnection.connect({ address: s.address }), CONNECT_TIMEOUT_MS, `no answer from ${s.address}`);
    const clientConnection = await deadline(
      Connection.connect({ address: s.address, connectTimeout: CONNECT_TIMEOUT_MS }),
      CONNECT_TIMEOUT_MS,
      `no answer from ${s.address}`,
    );
    const client = new Client({ connection: clientConnection, namespace: s.namespace });
    const { workflowBundle } = await import("./bundle.ts");
    quietPromiseHooksWarning(log);
    const worker = await Worker.create({
      connection: native,
      namespace: s.namespace,
      taskQueue: s.taskQueue,
      identity: o.identity,
      workflowBundle: await workflowBundle(),
      activities: o.activities as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>,
      maxConcurrentActivityTaskExecutions: o.maxActivities,
      // A stopping coordinator hands its activities over at once: another coordinator's worker retries them.
      shutdownGraceTime: 0,
    });
    const running = worker.run().catch((err: Error) => log.error("Temporal worker failed", { error: err.message.split("\n")[0] }));

    // getStatus() says POLLING even while the server is away: ask the server itself, one probe at a time.
    let serverOk = true;
    let probing = false;
    let counts: { running?: number; completed?: number } = {};
    const probe = setInterval(() => {
      if (probing) return;
      probing = true;
      const asked = clientConnection.workflowService.describeNamespace({ namespace: s.namespace }).then(
        () => true,
        () => false,
      );
      deadline(asked, PROBE_TIMEOUT_MS, "probe")
        .catch(() => false)
        .then(async (ok) => {
          if (ok !== serverOk)
            log[ok ? "info" : "warn"](
              ok ? "Temporal back: new requests run as workflows" : "Temporal unreachable: new requests run without workflow persistence",
              { address: s.address },
            );
          serverOk = ok;
          if (ok) counts = await workflowCounts(client, s).catch(() => counts);
        })
        .finally(() => {
          probing = false;
        });
    }, PROBE_EVERY_MS);

    log.info("Temporal connected: requests run as workflows", { address: s.address, namespace: s.namespace, task_queue: s.taskQueue });
    return {
      address: s.address,
      polling: () => serverOk && worker.getState() === "RUNNING",
      async start(msg, deadlineAt) {
        const { WorkflowExecutionAlreadyStartedError } = await import("@temporalio/client");
        try {
          await client.workflow.start("requestWorkflow", {
            taskQueue: s.taskQueue,
            workflowId: msg.request,
            args: [{ msg, deadline_at: deadlineAt }],
            // A bound in Temporal too; the workflow answers on its own deadline before this.
            workflowExecutionTimeout: Math.max(60_000, deadlineAt - Date.now() + 10 * 60_000),
          });
        } catch (err) {
          if (!(err instanceof WorkflowExecutionAlreadyStartedError))
            throw new Error(describeTemporalError(err, s.address), { cause: err });
        }
      },
      counts: () => counts,
      async signalDecision(request, d) {
        try {
          await client.workflow.getHandle(request).signal("decision", d);
        } catch (err) {
          // A request on the JetStream path has no workflow; one that ended needs no decision.
          log.debug("Decision not signalled to a workflow", { request, approval: d.id, error: (err as Error).message.split("\n")[0] });
        }
      },
      async stop() {
        clearInterval(probe);
        worker.shutdown();
        await running;
        await native.close().catch(() => {});
        await clientConnection.close().catch(() => {});
      },
    };
  } catch (err) {
    log.warn("Temporal connection failed (workflows disabled)", { address: s.address, error: describeTemporalError(err, s.address) });
    return undefined;
  }
}

async function workflowCounts(client: import("@temporalio/client").Client, s: TemporalSettings) {
  const q = (status: string) => `TaskQueue = '${s.taskQueue}' AND ExecutionStatus = '${status}'`;
  const [running, completed] = await Promise.all([client.workflow.count(q("Running")), client.workflow.count(q("Completed"))]);
  return { running: running.count, completed: completed.count };
}

/**
 * The SDK's runtime once per process: its logs through ours (errors readable, naming the address), and no
 * signal handlers of its own (we stop it).
 */
function installRuntime(Runtime: typeof import("@temporalio/worker").Runtime, log: Logger, address: string): void {
  const to = (level: string, message: string, meta?: Record<string, unknown>) => {
    const fields = { error: meta?.error ? describeTemporalError(meta.error, address) : undefined };
    // While the server is away the core retries each poll and says so every few seconds: the probe
    // below already says once that Temporal is unreachable (and again when it is back).
    if (level === "ERROR") log.error(`Temporal: ${message}`, fields);
    else if (level === "WARN" && !/^gRPC call \S+ retried/.test(message)) log.warn(`Temporal: ${message}`, fields);
    else log.debug(`Temporal: ${message}`, fields);
  };
  const logger = {
    log: (level: string, message: string, meta?: Record<string, unknown>) => to(level, message, meta),
    trace: () => {},
    debug: (m: string, meta?: Record<string, unknown>) => to("DEBUG", m, meta),
    info: (m: string, meta?: Record<string, unknown>) => to("INFO", m, meta),
    warn: (m: string, meta?: Record<string, unknown>) => to("WARN", m, meta),
    error: (m: string, meta?: Record<string, unknown>) => to("ERROR", m, meta),
  };
  try {
    Runtime.install({
      logger,
      shutdownSignals: [],
      telemetryOptions: { logging: { filter: { core: "WARN", other: "ERROR" }, forward: {} } },
    });
  } catch {
    // installed already (a second start in this process)
  }
}

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

let quieted = false;

/**
 * Under Bun the SDK's workflow threads print PROMISE_HOOKS_WARNING on stderr once each: Bun has no
 * v8.promiseHooks, so Temporal cannot show a workflow's stack trace (`temporal workflow stack`); workflows
 * run exactly the same. No SDK option turns the line off; it is taken out of stderr (a thread's output
 * passes through this process's stderr) and said once in our log instead, at debug level.
 */
function quietPromiseHooksWarning(log: Logger): void {
  if (quieted || typeof Bun === "undefined") return;
  quieted = true;
  log.debug("Temporal: workflow stack traces are not collected under Bun (no v8.promiseHooks); workflows are not affected");
  const stderr = process.stderr;
  const write = stderr.write.bind(stderr) as (chunk: unknown, ...rest: unknown[]) => boolean;
  const td = new TextDecoder();
  stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
    const small = typeof chunk === "string" ? chunk.length < 1024 : chunk instanceof Uint8Array && chunk.length < 1024;
    if (small) {
      const text = typeof chunk === "string" ? chunk : td.decode(chunk as Uint8Array);
      if (text.includes(PROMISE_HOOKS_WARNING)) {
        const left = text.replace(`${PROMISE_HOOKS_WARNING}\n`, "").replace(PROMISE_HOOKS_WARNING, "");
        if (left !== "") return write(left, ...rest);
        const done = rest.find((r) => typeof r === "function") as (() => void) | undefined;
        done?.();
        return true;
      }
    }
    return write(chunk, ...rest);
  }) as typeof stderr.write;
  // Without worker threads (the SDK's debug mode) the line comes from this thread's console.
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (args[0] !== PROMISE_HOOKS_WARNING) warn(...args);
  };
}
