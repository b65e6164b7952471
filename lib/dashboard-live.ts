// The dashboard command: observe the swarm (or run a node and show it), then print once or refresh in place.
import type { Cli } from "./cli.ts";
import type { LoadedConfig } from "./config.ts";
import { frameForTerminal, renderDashboard } from "./dashboard.ts";
import { createLogger } from "./log.ts";
import { startNode } from "./node.ts";
import { untilStopSignal } from "./signals.ts";

const REFRESH_MS = 1_000;

/**
 * `--json` / `--once`: collect the swarm for one query window, print, exit 0.
 * Otherwise refresh every second until SIGINT/SIGTERM. With swarm mode on, this process is also a node
 * of its role and "This Node" is that node; without, it is a passive observer that nobody counts.
 */
export async function runDashboard(loaded: LoadedConfig, cli: Cli, asNode: boolean): Promise<number> {
  const cfg = loaded.config;
  const oneShot = cli.is("json") || cli.is("once");
  const tty = process.stdout.isTTY === true && !oneShot;
  // Logs would tear the frame (or the JSON): only warnings and errors, and those go to stderr.
  const log = createLogger(tty || oneShot ? "warn" : cfg.log.level);
  const signalled = oneShot ? undefined : untilStopSignal(log); // before start-up, so Ctrl-C is always clean
  const node = await startNode(cfg, log, { observer: !asNode, queryWindowMs: oneShot ? 1_500 : 1_000 });

  if (oneShot) {
    await node.membership.discovered;
    // The queue depth comes from JetStream, asynchronously: read it now so it matches the node list.
    await node.refreshQueue();
    const snap = node.snapshot();
    console.log(cli.is("json") ? JSON.stringify(snap, null, 2) : renderDashboard(snap));
    await node.stop();
    return 0;
  }

  const draw = () => {
    const text = renderDashboard(node.snapshot(), { color: tty });
    process.stdout.write(tty ? frameForTerminal(text) : `${text}\n\n`);
  };
  if (tty) process.stdout.write("\x1b[?25l"); // hide cursor while redrawing
  await node.refreshQueue(); // bounded and never throws; later frames refresh it in the background
  draw();
  const timer = setInterval(draw, REFRESH_MS);
  await signalled;
  clearInterval(timer);
  if (tty) process.stdout.write("\x1b[?25h\n");
  await node.stop();
  return 0;
}
