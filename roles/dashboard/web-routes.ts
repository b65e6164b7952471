// The web dashboard (`--swarm.http.listen` on the dashboard): the page at /, its state as server-sent
// events at /events (the whole state on connect, on every change, and every second), and once at
// /api/state. One state is built per update and shared by every open page.
import { type Handler, isLoopback, parseListen } from "../../lib/http.ts";
import type { SwarmNode } from "../../lib/node.ts";
import { dashboardAccess } from "./access.ts";
import type { ApprovalsWatch } from "./approvals.ts";
import { approvalRoute } from "./decide.ts";
import type { LiveRequests, WebState } from "./live.ts";
import { buildSnapshot } from "./snapshot.ts";
import { webPage } from "./web/page.ts" with { type: "macro" };

const PAGE: string = webPage();
/** The page is re-sent at least this often (uptimes, elapsed times), and at most every CHANGE_MS on changes. */
const REFRESH_MS = 1_000;
const CHANGE_MS = 150;
/** Open pages at most (each holds a connection and is sent every update). */
export const MAX_EVENT_CLIENTS = 100;
/** Frames a page may fall behind (it reads nothing) before it is dropped: a stalled reader costs no memory. */
const MAX_BEHIND = 16;

export function webRoutes(node: SwarmNode, live: LiveRequests, approvals?: ApprovalsWatch): Record<string, Handler> {
  const clients = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const enc = new TextEncoder();
  const decide = approvalRoute(node, approvals);
  const state = (): WebState => {
    node.queue.refreshIfStale();
    const calls = approvals?.list() ?? [];
    return {
      snapshot: { ...buildSnapshot(node, node.queue.value()), approvals: approvals && calls },
      live: live.view(),
      approvals: { calls, decide: decide.enabled, read_only: decide.readOnly },
    };
  };
  let sentVersion = -1;
  let sentAt = 0;
  const push = () => {
    if (clients.size === 0) return;
    const frame = enc.encode(`data: ${JSON.stringify(state())}\n\n`);
    sentVersion = live.version();
    sentAt = Date.now();
    for (const c of clients) {
      try {
        if ((c.desiredSize ?? 0) < -MAX_BEHIND) {
          clients.delete(c);
          c.close();
          continue;
        }
        c.enqueue(frame);
      } catch {
        clients.delete(c); // closed under us
      }
    }
  };
  // Membership changes (a node joined, went offline) and request events show at once; the rest every second.
  const ticker = setInterval(() => {
    if (live.version() !== sentVersion || Date.now() - sentAt >= REFRESH_MS) push();
  }, CHANGE_MS);
  ticker.unref?.();
  node.onPeerEvent(() => push());

  const cfg = node.config.swarm.http;
  const access = dashboardAccess(cfg.dashboard_keys, isLoopback(parseListen(cfg.listen, "swarm.http.listen").hostname), cfg.listen);
  if (access.closed) node.log.warn(`Web dashboard pages refused: ${access.closed}; /healthz, /readyz and /metrics still answer`);
  return {
    "/": access.guard(() => new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" } })),
    "/api/state": access.guard(() => Response.json(state())),
    "/api/approvals/decide": access.guard(decide.handler),
    "/events": access.guard((req, srv) => {
      if (clients.size >= MAX_EVENT_CLIENTS) {
        return Response.json(
          { error: `${MAX_EVENT_CLIENTS} pages follow this dashboard already; close one, or use /api/state` },
          { status: 503, headers: { "retry-after": "5" } },
        );
      }
      srv.timeout(req, 0); // a page follows for as long as it is open
      let me: ReadableStreamDefaultController<Uint8Array> | undefined;
      const body = new ReadableStream<Uint8Array>(
        {
          start(c) {
            me = c;
            clients.add(c);
            c.enqueue(enc.encode(`retry: 1000\ndata: ${JSON.stringify(state())}\n\n`));
          },
          cancel() {
            if (me) clients.delete(me);
          },
        },
        new CountQueuingStrategy({ highWaterMark: 1 }),
      );
      req.signal.addEventListener("abort", () => me && clients.delete(me));
      return new Response(body, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
    }),
  };
}
