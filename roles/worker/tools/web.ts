// PicoClaw's `web_fetch` tool: GET an http(s) URL and return its status, type and text. A model on a
// swarm node must not reach the node's neighbours (cloud metadata, NATS, admin ports): every hop's host
// is resolved first and refused when any address is internal, unless allow-listed, and the connection
// goes to exactly the addresses checked (no second lookup a DNS rebinding could answer differently).
import { lookup } from "node:dns/promises";
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { stringArg, type Tool, ToolError, type ToolResult } from "./index.ts";

export interface WebFetchOptions {
  /** tools.web.fetch.allow_hosts: names or addresses, optionally with :port, that may be internal. */
  allowHosts: string[];
  /** The body is cut here (the cut is said). */
  maxBytes: number;
  timeoutMs: number;
}

const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

interface Address {
  address: string;
  family: number;
}

export function webFetchTool(o: WebFetchOptions): Tool {
  const allowed = new Set(o.allowHosts.map((h) => h.toLowerCase()));
  return {
    name: "web_fetch",
    description: "Fetch a web page or file over http(s) and return its status, content type and text (HTML reduced to its text).",
    parameters: {
      type: "object",
      properties: { url: { type: "string", description: "The http:// or https:// URL to fetch" } },
      required: ["url"],
      additionalProperties: false,
    },
    replaySafe: true,
    async execute(args, ctx) {
      let url = parseUrl(stringArg(args, "url"));
      const timeout = AbortSignal.timeout(o.timeoutMs);
      const signal = AbortSignal.any([ctx.signal, timeout]);
      try {
        for (let hop = 0; ; hop++) {
          const addresses = allowed.has(hostOf(url)) || allowed.has(hostPortOf(url)) ? undefined : await vet(url, signal);
          const res = await get(url, addresses, signal);
          const location = res.headers.location;
          if (!REDIRECTS.has(res.statusCode ?? 0) || !location) return await describe(res, url, hop > 0, o.maxBytes);
          res.resume();
          if (hop >= MAX_REDIRECTS) throw new ToolError(`too many redirects (more than ${MAX_REDIRECTS}), last to ${location}`);
          url = parseUrl(new URL(location, url).href);
        }
      } catch (err) {
        if (timeout.aborted && !ctx.signal.aborted) throw new ToolError(`${url.href}: no answer within ${o.timeoutMs / 1000} s`, "timeout");
        throw err;
      }
    },
  };
}

function parseUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ToolError(`"${text}" is not a URL`, "bad_arguments");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new ToolError(`${url.protocol} URLs are not fetched, only http and https`, "refused");
  return url;
}

/** The host as allow_hosts spells it: lower case, IPv6 without brackets. */
const hostOf = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
const hostPortOf = (url: URL) => `${url.hostname.toLowerCase()}:${url.port || (url.protocol === "https:" ? "443" : "80")}`;

/** The host's addresses, or a refusal when any of them is internal. Nothing is sent before this. */
async function vet(url: URL, signal: AbortSignal): Promise<Address[]> {
  const host = hostOf(url);
  const family = isIP(host);
  const addresses = family ? [{ address: host, family }] : await abortable(resolveAll(host), signal);
  for (const a of addresses) {
    const kind = internalKind(a.address);
    if (kind) {
      const what = a.address === host ? host : `${host} (${a.address})`;
      throw new ToolError(
        `${what} is a ${kind} address; web_fetch reaches only public hosts unless tools.web.fetch.allow_hosts lists it`,
        "refused",
      );
    }
  }
  if (addresses.length === 0) throw new ToolError(`${host} has no address`);
  return addresses;
}

async function resolveAll(host: string): Promise<Address[]> {
  try {
    return await lookup(host, { all: true, verbatim: true });
  } catch (err) {
    throw new ToolError(`${host}: the name does not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    }),
  ]);
}

/** One GET; with `addresses`, the connection goes to those (the ones vetted) and no others. */
function get(url: URL, addresses: Address[] | undefined, signal: AbortSignal): Promise<IncomingMessage> {
  const pinned: LookupFunction | undefined = addresses
    ? (_host, options, callback) => {
        const first = addresses[0]!;
        if (options.all) callback(null, addresses);
        else callback(null, first.address, first.family);
      }
    : undefined;
  const headers = { "user-agent": "picoclaw-swarm web_fetch", accept: "text/html,text/plain,application/json,*/*;q=0.8" };
  return new Promise((resolve, reject) => {
    const req = (url.protocol === "https:" ? https : http).request(url, { method: "GET", headers, signal, lookup: pinned }, resolve);
    req.once("error", reject);
    req.end();
  });
}

async function describe(res: IncomingMessage, url: URL, redirected: boolean, maxBytes: number): Promise<ToolResult> {
  const type = String(res.headers["content-type"] ?? "");
  const { bytes, cut } = await readBody(res, maxBytes);
  const head = [
    `HTTP ${res.statusCode} ${res.statusMessage ?? ""}`.trim(),
    ...(redirected ? [`url: ${url.href}`] : []),
    `content-type: ${type || "(none)"}`,
  ];
  let body: string;
  if (!isText(type, bytes)) body = `[binary body not shown: ${bytes.length}${cut ? "+" : ""} bytes]`;
  else {
    const text = bytes.toString("utf8").replace(/\uFFFD$/, "");
    body = /html/i.test(type) ? htmlText(text) : text;
    if (cut) body += `\n[body cut: only the first ${maxBytes} bytes were read]`;
  }
  return { content: `${head.join("\n")}\n\n${body}`, isError: (res.statusCode ?? 0) >= 400 };
}

/** Reads at most `maxBytes`, then drops the connection. */
async function readBody(res: IncomingMessage, maxBytes: number): Promise<{ bytes: Buffer; cut: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > maxBytes) {
      res.destroy();
      return { bytes: Buffer.concat(chunks).subarray(0, maxBytes), cut: true };
    }
  }
  return { bytes: Buffer.concat(chunks), cut: false };
}

function isText(type: string, bytes: Buffer): boolean {
  if (/^(text\/|application\/(json|xml|javascript|x-www-form-urlencoded)|[^;]*\+(json|xml))/i.test(type)) return true;
  return type === "" && !bytes.subarray(0, 1024).includes(0);
}

/** HTML reduced to its text, crudely: scripts and styles dropped, tags removed, common entities decoded. */
export function htmlText(html: string): string {
  const entities: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'", apos: "'", nbsp: " " };
  return html
    .replace(/<(script|style|noscript|template)\b[\s\S]*?<\/\1\s*>/gi, " ")
    .replace(/<!--[\s\S]*?-->/g, " ")
    .replace(/<\/?(br|p|div|h[1-6]|li|tr|section|article|header|footer|pre|table|ul|ol)\b[^>]*>/gi, "\n")
    .replace(/<[^>]*>/g, " ")
    .replace(/&(amp|lt|gt|quot|#39|apos|nbsp);/g, (_, e: string) => entities[e] ?? "")
    .replace(/[ \t\r\f\v]+/g, " ")
    .replace(/ ?\n ?/g, "\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}

/**
 * Why `address` is not a public unicast one ("loopback", "private", ...), or undefined when it is.
 * IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by it.
 */
export function internalKind(address: string): string | undefined {
  const plain = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  if (isIP(plain) === 4) return v4Kind(plain.split(".").map(Number));
  if (isIP(plain) !== 6) return "malformed";
  const g = v6Groups(plain);
  const v4 = (hi: number, lo: number) => [hi >> 8, hi & 255, lo >> 8, lo & 255];
  const zeros = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zeros(8)) return "unspecified";
  if (zeros(7) && g[7] === 1) return "loopback";
  if (zeros(5) && g[5] === 0xffff) return v4Kind(v4(g[6]!, g[7]!));
  if (zeros(6)) return v4Kind(v4(g[6]!, g[7]!));
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return v4Kind(v4(g[6]!, g[7]!));
  if (g[0] === 0x2002) return v4Kind(v4(g[1]!, g[2]!));
  if ((g[0]! & 0xffc0) === 0xfe80) return "link-local";
  if ((g[0]! & 0xffc0) === 0xfec0 || (g[0]! & 0xfe00) === 0xfc00) return "private";
  if ((g[0]! & 0xff00) === 0xff00) return "multicast";
  return undefined;
}

function v4Kind([a, b]: number[]): string | undefined {
  if (a === undefined || b === undefined) return "malformed";
  if (a === 0) return "unspecified";
  if (a === 127) return "loopback";
  if (a === 169 && b === 254) return "link-local";
  if (a === 10 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168)) return "private";
  if (a === 100 && b >= 64 && b < 128) return "shared (CGNAT)";
  if (a >= 224) return a < 240 ? "multicast" : "reserved";
  return undefined;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a trailing IPv4 part converted). */
function v6Groups(address: string): number[] {
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [left, right] = text.split("::") as [string, string | undefined];
  const parse = (s: string | undefined) => (s ? s.split(":").map((x) => Number.parseInt(x, 16)) : []);
  const head = parse(left);
  const tail = parse(right);
  return right === undefined ? head : [...head, ...Array(8 - head.length - tail.length).fill(0), ...tail];
}
