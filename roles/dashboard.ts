#!/usr/bin/env bun
// The dashboard: observe the swarm without ever joining it (whatever the config file says), then
// print one frame (--once), one JSON snapshot (--json), or redraw the guide's dashboard every second.
import type { Cli } from "../lib/cli.ts";
import { runEntry } from "../lib/cli.ts";
import type { LoadedConfig } from "../lib/config.ts";
import { createLogger } from "../lib/log.ts";
import { type SwarmNode, startNode } from "../lib/node.ts";
import { untilStopSignal } from "../lib/signals.ts";
import { trustedAnswerKeys } from "../lib/signing.ts";
import { type ApprovalsWatch, watchApprovals } from "./dashboard/approvals.ts";
import { createLiveRequests, followSwarmRequests } from "./dashboard/live.ts";
import { frameForTerminal, renderDashboard } from "./dashboard/render.ts";
import { buildSnapshot, type DashboardSnapshot } from "./dashboard/snapshot.ts";
import { webRoutes } from "./dashboard/web-routes.ts";

const REFRESH_MS = 1_000;

/** How the dashboard shows what it sees. */
export interface ShowOptions {
  /** One snapshot as JSON, then exit. */
  json: boolean;
  /** One frame, then exit. */
  once: boolean;
}

/** `picoclaw-dashboard` / `picoclaw --swarm.dashboard` without swarm mode: an observer nobody counts. */
export async function observeSwarm(loaded: LoadedConfig, show: ShowOptions): Promise<number> {
  const cfg = loaded.config;
  const log = dashboardLogger(cfg.log.level, show);
  const signalled = show.json || show.once ? undefined : untilStopSignal(log); // before start-up, so Ctrl-C is always clean
  const node = await startNode(cfg, log, { observer: true, queryWindowMs: show.json || show.once ? 1_500 : 1_000 });
  const approvals = await watchApprovals(node.link.nc, node.names, cfg, log);
  if (!show.json && !show.once && cfg.swarm.http.listen) {
    // The web dashboard: the same snapshot plus every request as it runs, pushed to the page.
    const live = createLiveRequests();
    followSwarmRequests(node.link.nc, node.names, node.bad, live, trustedAnswerKeys(cfg));
    node.serveHttp(webRoutes(node, live, approvals));
  }
  return showDashboard(node, show, signalled, approvals);
}

/**
 * Shows `node`'s view of the swarm: an observer's, or a member's own ("This Node" is that member).
 * One-shot: collect the swarm for one query window, print, stop the node, exit 0. Live: refresh every
 * second until SIGINT/SIGTERM.
 */
export async function showDashboard(
  node: SwarmNode,
  show: ShowOptions,
  signalled?: Promise<string>,
  watched?: ApprovalsWatch,
): Promise<number> {
  const { queue } = node;
  const approvals = watched ?? (await watchApprovals(node.link.nc, node.names, node.config, node.log));
  const snapshot = (): DashboardSnapshot => {
    queue.refreshIfStale();
    return { ...buildSnapshot(node, queue.value()), approvals: approvals?.list() };
  };
  if (show.json || show.once) {
    await node.membership.discovered;
    await Promise.race([approvals?.ready, Bun.sleep(3_000)]); // the calls stored so far, read at most this long
    // The queue depth comes from JetStream, asynchronously: read it now so it matches the node list.
    await queue.refresh();
    console.log(show.json ? JSON.stringify(snapshot(), null, 2) : renderDashboard(snapshot()));
    approvals?.stop();
    await node.stop();
    return 0;
  }
  const tty = process.stdout.isTTY === true;
  // Without a terminal (a container's log, a pipe) frames pile up instead of redrawing: one a second is
  // ~100 MB a day. There a frame is printed only when something a person would notice changed, at most
  // every log.dashboard_interval (a change in between shows in the next frame).
  const worthPrinting = logFrameGate(node.config.log.dashboard_interval);
  const draw = () => {
    const s = snapshot();
    if (tty) process.stdout.write(frameForTerminal(renderDashboard(s, { color: true })));
    else if (worthPrinting(s)) process.stdout.write(`${renderDashboard(s)}\n\n`);
  };
  if (tty) process.stdout.write("\x1b[?25l"); // hide cursor while redrawing
  await queue.refresh(); // bounded and never throws; later frames refresh it in the background
  draw();
  const timer = setInterval(draw, REFRESH_MS);
  await Promise.race([signalled ?? untilStopSignal(node.log), node.stopRequested]);
  clearInterval(timer);
  approvals?.stop();
  if (tty) process.stdout.write("\x1b[?25h\n");
  await node.stop();
  return 0;
}

/**
 * What a person reading frames in a log would notice: which nodes there are, their roles, statuses,
 * loads, running sub-tasks and counts, the swarm's totals and the connections. Not clocks, uptimes,
 * elapsed times or how long ago a heartbeat came: those change every second and say nothing new.
 */
export function noticeable(s: DashboardSnapshot): string {
  const node = (n: DashboardSnapshot["nodes"][number]) => [
    n.node,
    n.role,
    n.status,
    n.running,
    n.max_concurrent,
    n.done,
    n.failed,
    n.capabilities.join(","),
    n.tasks.map((t) => `${t.task}@${t.request}`).join(","),
    n.bad_messages.total,
  ];
  return JSON.stringify([
    (s.approvals ?? []).map((a) => a.id),
    s.hid,
    node(s.this_node),
    s.connections.nats.connected,
    s.connections.nats.url,
    s.connections.temporal.enabled,
    s.connections.temporal.connected,
    s.stats,
    s.tasks,
    s.bad_messages.total,
    s.nodes.map(node),
  ]);
}

/**
 * For frames printed to a log: true when `s` differs noticeably from the last frame printed and that
 * was at least `intervalMs` ago (the first frame always prints).
 */
export function logFrameGate(intervalMs: number, now: () => number = Date.now): (s: DashboardSnapshot) => boolean {
  let printed: string | undefined;
  let printedAt = 0;
  return (s) => {
    const key = noticeable(s);
    if (key === printed) return false;
    if (printed !== undefined && now() - printedAt < intervalMs) return false;
    printed = key;
    printedAt = now();
    return true;
  };
}

/** Logs would tear the frame (or the JSON): only warnings and errors then, and those go to stderr. */
export function dashboardLogger(level: LoadedConfig["config"]["log"]["level"], show: ShowOptions) {
  const framed = show.json || show.once || process.stdout.isTTY === true;
  return createLogger(framed ? "warn" : level);
}

export function showOptions(cli: Cli): ShowOptions {
  return { json: cli.is("json"), once: cli.is("once") };
}

if (import.meta.main) {
  process.exit(
    await runEntry(process.argv.slice(2), {
      name: "picoclaw-dashboard",
      usage:
        "observe the swarm and redraw its dashboard every second (--once: one frame; --json: one snapshot; " +
        "without a terminal, a frame when the swarm changes)",
      flags: ["once", "json"],
      form: "[--once | --json] [--KEY VALUE ...]",
      run: (cli, loaded) => observeSwarm(loaded, showOptions(cli)),
    }),
  );
}
