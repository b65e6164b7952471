// The gateway's HTTP routes under /v1/: bearer keys, the model list, chat completions, and CORS so a
// chat UI in a browser may call it directly. Every error is in OpenAI's shape.
import { createHash, timingSafeEqual } from "node:crypto";
import type { Server } from "bun";
import type { Handler } from "../../lib/http.ts";
import type { SwarmNode } from "../../lib/node.ts";
import { onlineCapabilities } from "../../lib/registry.ts";
import { chatCompletions } from "./chat.ts";
import { ApiError, modelNotFound, SWARM_MODEL } from "./openai.ts";

const CORS = {
  "access-control-allow-origin": "*",
  "access-control-allow-headers": "authorization, content-type",
  "access-control-allow-methods": "GET, POST, OPTIONS",
};

/** Routes for `serveHttp`: everything under /v1/. */
export function openaiRoutes(node: SwarmNode): Record<string, Handler> {
  const keys = node.config.swarm.gateway.api_keys.map(digest);
  // Without keys (loopback only) no web page may call the gateway: no CORS, so a browser keeps other
  // origins' pages out; with keys, a page must hold one anyway.
  const cors: Record<string, string> = keys.length > 0 ? CORS : {};
  const chat = chatCompletions(node);
  const created = Math.floor(node.startedAt / 1000);

  const models = async () => {
    await node.membership.discovered;
    const caps = [...onlineCapabilities(node.membership.registry).keys()].sort();
    return [SWARM_MODEL, ...caps.map((c) => `${SWARM_MODEL}/${c}`)].map((id) => ({ id, object: "model", created, owned_by: "picoclaw" }));
  };

  const route = async (req: Request, srv: Server<undefined>): Promise<Response> => {
    if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: cors });
    authorize(req, keys);
    const path = new URL(req.url).pathname.replace(/\/+$/, "");
    if (path === "/v1/chat/completions") {
      if (req.method !== "POST") throw new ApiError(405, `use POST for ${path}`, "method_not_allowed");
      // JSON only: a form or text/plain POST is what a page may send cross-origin without asking first.
      const type = (req.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
      if (type !== "application/json") {
        throw new ApiError(
          415,
          `send the chat as JSON (content-type: application/json), not ${type || "no content type"}`,
          "unsupported_media_type",
        );
      }
      srv.timeout(req, 0); // an answer may take minutes: no idle cut while the chat waits for it
      return chat(req, cors);
    }
    if (path === "/v1/models" && req.method === "GET") return Response.json({ object: "list", data: await models() }, { headers: cors });
    if (path.startsWith("/v1/models/") && req.method === "GET") {
      const id = decodeURIComponent(path.slice("/v1/models/".length));
      const list = await models();
      const found = list.find((m) => m.id === id);
      if (!found)
        throw modelNotFound(
          id,
          list.slice(1).map((m) => m.id.slice(SWARM_MODEL.length + 1)),
        );
      return Response.json(found, { headers: cors });
    }
    throw new ApiError(
      404,
      `no route ${req.method} ${path}: this gateway serves GET /v1/models and POST /v1/chat/completions`,
      "unknown_url",
    );
  };

  return {
    "/v1/": async (req, srv) => {
      try {
        return await route(req, srv);
      } catch (err) {
        if (err instanceof ApiError) return err.response(cors);
        node.log.error("Gateway request failed", { error: (err as Error)?.message ?? String(err) });
        return new ApiError(500, "internal error in the gateway", "internal_error").response(cors);
      }
    },
  };
}

/** The gateway's key check for other routes (A2A): the refusal in OpenAI's error shape, or undefined. */
export function keyCheck(node: SwarmNode): (req: Request) => Response | undefined {
  const keys = node.config.swarm.gateway.api_keys.map(digest);
  return (req) => {
    try {
      authorize(req, keys);
      return undefined;
    } catch (err) {
      return err instanceof ApiError ? err.response({}) : undefined;
    }
  };
}

/** With keys configured, every /v1/ call needs `Authorization: Bearer <one of them>`. */
function authorize(req: Request, keys: Buffer[]): void {
  if (keys.length === 0) return;
  const header = req.headers.get("authorization") ?? "";
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) {
    throw new ApiError(
      401,
      "missing bearer authentication: send 'Authorization: Bearer <key>' with a key from swarm.gateway.api_keys",
      "invalid_api_key",
    );
  }
  const given = digest(m[1]!);
  // Digests have one length, so the comparison takes the same time whichever key is close.
  if (!keys.some((k) => timingSafeEqual(k, given))) throw new ApiError(401, "incorrect API key provided", "invalid_api_key");
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
}
