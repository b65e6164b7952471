// Who may see the web dashboard's pages (they show answers, request titles, node ids and token use):
// with swarm.http.dashboard_keys, a holder of a key (a bearer header, or a browser that opened /?key=KEY
// once and got a cookie); without keys, only clients of a loopback listener. /healthz, /readyz and
// /metrics are not behind this: they show no request content.
import { createHash, timingSafeEqual } from "node:crypto";
import type { Handler } from "../../lib/http.ts";

const COOKIE = "picoclaw_dashboard";

export interface DashboardAccess {
  /** The route, answered only for a client with access. */
  guard(handler: Handler): Handler;
  /** Why nobody can see the pages, when that is so (a warning at start). */
  closed?: string;
}

export function dashboardAccess(keys: string[], loopback: boolean, listen: string): DashboardAccess {
  const digests = keys.map(digest);
  const known = (d: Buffer) => digests.some((k) => timingSafeEqual(k, d));
  const closed =
    digests.length === 0 && !loopback
      ? `the web dashboard listens beyond loopback (swarm.http.listen ${listen}) and swarm.http.dashboard_keys is empty`
      : undefined;
  const deny = (status: number, error: string) => Response.json({ error }, { status, headers: { "cache-control": "no-store" } });
  return {
    closed,
    guard: (handler) => (req, srv) => {
      if (closed) return deny(403, `${closed}: set keys (PICOCLAW_SWARM_HTTP_DASHBOARD_KEYS), or listen on 127.0.0.1`);
      if (digests.length === 0) return handler(req, srv);
      const url = new URL(req.url);
      const given = url.searchParams.get("key");
      if (given !== null) {
        if (!known(digest(given))) return deny(401, "unknown dashboard key");
        // The key becomes a cookie (its digest, never the key) and leaves the address bar.
        return new Response(null, {
          status: 303,
          headers: {
            location: url.pathname,
            "set-cookie": `${COOKIE}=${digest(given).toString("hex")}; HttpOnly; SameSite=Strict; Path=/`,
          },
        });
      }
      const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "")?.[1];
      const cookie = cookieValue(req.headers.get("cookie"));
      const ok = (bearer !== undefined && known(digest(bearer))) || (cookie !== undefined && known(Buffer.from(cookie, "hex")));
      return ok ? handler(req, srv) : deny(401, "this dashboard needs a key: open /?key=KEY, or send Authorization: Bearer KEY");
    },
  };
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}

/** The dashboard cookie's value when it is 64 hex digits (a sha256 digest). */
function cookieValue(header: string | null): string | undefined {
  const m = new RegExp(`(?:^|;\\s*)${COOKIE}=([0-9a-f]{64})(?:;|$)`).exec(header ?? "");
  return m?.[1];
}
