#!/usr/bin/env bun
// The dashboard: observe the swarm without ever joining it (whatever the config file says), then
// print one frame (--once), one JSON snapshot (--json), or redraw the guide's dashboard every second.
import type { Cli } from "../lib/cli.ts";
import { runEntry } from "../lib/cli.ts";
import type { LoadedConfig } from "../lib/config.ts";
import { createLogger } from "../lib/log.ts";
import { type SwarmNode, startNode } from "../lib/node.ts";
import { untilStopSignal } from "../lib/signals.ts";
import { frameForTerminal, renderDashboard } from "./dashboard/render.ts";
import { buildSnapshot } from "./dashboard/snapshot.ts";

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
  if (!show.json && !show.once) node.serveHttp();
  return showDashboard(node, show, signalled);
}

/**
 * Shows `node`'s view of the swarm: an observer's, or a member's own ("This Node" is that member).
 * One-shot: collect the swarm for one query window, print, stop the node, exit 0. Live: refresh every
 * second until SIGINT/SIGTERM.
 */
export async function showDashboard(node: SwarmNode, show: ShowOptions, signalled?: Promise<string>): Promise<number> {
  const { queue } = node;
  const snapshot = () => {
    queue.refreshIfStale();
    return buildSnapshot(node, queue.value().total);
  };
  if (show.json || show.once) {
    await node.membership.discovered;
    // The queue depth comes from JetStream, asynchronously: read it now so it matches the node list.
    await queue.refresh();
    console.log(show.json ? JSON.stringify(snapshot(), null, 2) : renderDashboard(snapshot()));
    await node.stop();
    return 0;
  }
  const tty = process.stdout.isTTY === true;
  const draw = () => {
    const text = renderDashboard(snapshot(), { color: tty });
    process.stdout.write(tty ? frameForTerminal(text) : `${text}\n\n`);
  };
  if (tty) process.stdout.write("\x1b[?25l"); // hide cursor while redrawing
  await queue.refresh(); // bounded and never throws; later frames refresh it in the background
  draw();
  const timer = setInterval(draw, REFRESH_MS);
  await Promise.race([signalled ?? untilStopSignal(node.log), node.stopRequested]);
  clearInterval(timer);
  if (tty) process.stdout.write("\x1b[?25h\n");
  await node.stop();
  return 0;
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
      usage: "observe the swarm and redraw its dashboard every second (--once: one frame; --json: one snapshot)",
      run: (cli, loaded) => observeSwarm(loaded, showOptions(cli)),
    }),
  );
}
