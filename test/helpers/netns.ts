// Several "hosts" on one machine: Linux network namespaces `pc<rand>-h1..hN`, each with one veth link to
// a bridge that lives in a namespace of its own (`pc<rand>-br`), so the machine's own network (its
// interfaces, routes and firewall) is never touched. Addresses are 10.213.<subnet>.<10+i>/24 and exist
// only inside these namespaces.
//
//   cut(host)   sets the host's port on the bridge down: the host loses carrier and every packet between
//               it and the others is dropped silently, as in a real partition. Inside the host,
//               loopback and its own address still work, so its local nats-server and nodes keep running.
//   heal(host)  sets the port up again; TCP connections that were stalled carry on.
//   cleanup()   SIGKILLs the processes still inside the lab's namespaces (by pid, from `ip netns pids`)
//               and deletes the namespaces, which removes the veths and the bridge with them, and the
//               lab's temporary directories (tempDir()). It is idempotent, runs synchronously, and is
//               also registered for process exit and SIGINT / SIGTERM. A lab left by a test process that died by SIGKILL is removed by the next
//               createNetLab (marker files in $TMPDIR/picoclaw-netns name the owner pid).
//
// Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2's `ip`: see canCreateNamespaces().
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface NetHost {
  /** Short name used by the test: h1, h2, ... */
  name: string;
  /** The network namespace, `pc<rand>-hN`. */
  ns: string;
  /** Its address on the lab's bridge (10.213.<subnet>.<10+N>). */
  ip: string;
  /** The bridge-side end of its veth pair (in the bridge namespace). */
  port: string;
}

export interface NetLab {
  id: string;
  bridgeNs: string;
  hosts: NetHost[];
  host(name: string): NetHost;
  /** Command prefix running a program inside the host's namespace: `ip netns exec <ns>`. */
  exec(host: NetHost | string): string[];
  /** Drops every packet between this host and the others (bridge port down). */
  cut(host: NetHost | string): void;
  /** Undoes cut(). */
  heal(host: NetHost | string): void;
  /** Whether the host is cut off right now (bridge port administratively down). */
  isCut(host: NetHost | string): boolean;
  /** A new temporary directory removed by cleanup() (and by the stale-lab reaper). */
  tempDir(prefix: string): string;
  /** Kills what runs in the namespaces, deletes them and the lab's temporary directories; idempotent. */
  cleanup(): void;
}

export interface NetLabOptions {
  /** Number of hosts (1-200). */
  hosts: number;
  /** Third octet of 10.213.<subnet>.0/24 (default 0). Labs never share a bridge, so they may reuse it. */
  subnet?: number;
}

const MARKERS = join(tmpdir(), "picoclaw-netns");
const live = new Map<string, NetLab>();
let hooked = false;

/** Runs `ip ...` synchronously; throws with the command and its stderr when it fails. */
function ip(...args: string[]): string {
  const r = Bun.spawnSync(["ip", ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    const err = r.stderr.toString().trim() || `exit code ${r.exitCode}`;
    throw new Error(`ip ${args.join(" ")}: ${err}`);
  }
  return r.stdout.toString();
}

function tryIp(...args: string[]): string | undefined {
  try {
    return ip(...args);
  } catch {
    return undefined;
  }
}

function randomId(): string {
  return `pc${crypto.getRandomValues(new Uint8Array(3)).reduce((s, b) => s + b.toString(16).padStart(2, "0"), "")}`;
}

/**
 * Whether this process can build a lab: `ip` is there, and a probe namespace with a bridge and a veth
 * pair can be created and deleted. `reason` says what is missing when not.
 */
export function canCreateNamespaces(): { ok: boolean; reason: string } {
  const probe = `${randomId()}-probe`;
  try {
    const v = Bun.spawnSync(["ip", "-V"], { stdout: "pipe", stderr: "pipe" });
    if (v.exitCode !== 0) return { ok: false, reason: "`ip -V` failed: iproute2 is not usable" };
  } catch {
    return { ok: false, reason: "the `ip` command (iproute2) is not installed: apt-get install -y iproute2" };
  }
  try {
    ip("netns", "add", probe);
  } catch (err) {
    const uid = process.getuid?.();
    return {
      ok: false,
      reason: `cannot create a network namespace (${(err as Error).message}); needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN (uid ${uid})`,
    };
  }
  try {
    ip("-n", probe, "link", "add", "br0", "type", "bridge");
    ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1");
    ip("-n", probe, "link", "set", "v0", "master", "br0");
    return { ok: true, reason: "" };
  } catch (err) {
    return {
      ok: false,
      reason: `namespaces work but bridge/veth links do not (${(err as Error).message}); the kernel needs the bridge and veth drivers`,
    };
  } finally {
    tryIp("netns", "del", probe);
  }
}

/** Creates the bridge namespace and `hosts` host namespaces joined to it. */
export function createNetLab(o: NetLabOptions): NetLab {
  if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > 200) throw new Error(`hosts must be 1-200, got ${o.hosts}`);
  const subnet = o.subnet ?? 0;
  if (!Number.isInteger(subnet) || subnet < 0 || subnet > 255) throw new Error(`subnet must be 0-255, got ${subnet}`);
  reapStaleLabs();
  hookExit();

  const id = randomId();
  const bridgeNs = `${id}-br`;
  const hosts: NetHost[] = Array.from({ length: o.hosts }, (_, k) => ({
    name: `h${k + 1}`,
    ns: `${id}-h${k + 1}`,
    ip: `10.213.${subnet}.${11 + k}`,
    port: `v${k + 1}`,
  }));
  const namespaces = [bridgeNs, ...hosts.map((h) => h.ns)];
  const dirs: string[] = [];
  mkdirSync(MARKERS, { recursive: true });
  const marker = join(MARKERS, `${id}.json`);
  const writeMarker = () => writeFileSync(marker, JSON.stringify({ pid: process.pid, namespaces, dirs }));
  writeMarker();

  let cleaned = false;
  const find = (h: NetHost | string): NetHost => {
    const name = typeof h === "string" ? h : h.name;
    const found = hosts.find((x) => x.name === name || x.ns === name);
    if (!found) throw new Error(`no host ${name} in lab ${id} (hosts: ${hosts.map((x) => x.name).join(", ")})`);
    return found;
  };
  const lab: NetLab = {
    id,
    bridgeNs,
    hosts,
    host: find,
    exec: (h) => ["ip", "netns", "exec", find(h).ns],
    cut: (h) => void ip("-n", bridgeNs, "link", "set", find(h).port, "down"),
    heal: (h) => void ip("-n", bridgeNs, "link", "set", find(h).port, "up"),
    isCut: (h) => !/[<,]UP[,>]/.test(ip("-n", bridgeNs, "-o", "link", "show", find(h).port)),
    tempDir(prefix) {
      const dir = mkdtempSync(join(tmpdir(), `${id}-${prefix}`));
      dirs.push(dir);
      writeMarker();
      return dir;
    },
    cleanup() {
      if (cleaned) return;
      cleaned = true;
      removeNamespaces(namespaces);
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      rmSync(marker, { force: true });
      live.delete(id);
    },
  };
  live.set(id, lab);

  try {
    ip("netns", "add", bridgeNs);
    ip("-n", bridgeNs, "link", "set", "lo", "up");
    ip("-n", bridgeNs, "link", "add", "br0", "type", "bridge");
    ip("-n", bridgeNs, "link", "set", "br0", "up");
    for (const h of hosts) {
      ip("netns", "add", h.ns);
      ip("-n", h.ns, "link", "set", "lo", "up");
      // Created in the bridge namespace, the peer goes straight into the host's: nothing ever appears
      // in the machine's own namespace.
      ip("-n", bridgeNs, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns);
      ip("-n", bridgeNs, "link", "set", h.port, "master", "br0");
      ip("-n", bridgeNs, "link", "set", h.port, "up");
      ip("-n", h.ns, "addr", "add", `${h.ip}/24`, "dev", "eth0");
      ip("-n", h.ns, "link", "set", "eth0", "up");
    }
  } catch (err) {
    lab.cleanup();
    throw err;
  }
  return lab;
}

/** SIGKILLs every process inside the namespaces (they can only be ours), then deletes them. */
function removeNamespaces(namespaces: string[]): void {
  const existing = new Set((tryIp("netns", "list") ?? "").split("\n").map((l) => l.split(" ")[0]));
  for (const ns of namespaces) {
    if (!existing.has(ns)) continue;
    // A namespace lives on while a process is inside it: kill those first (bounded: a few rounds).
    for (let round = 0; round < 5; round++) {
      const pids = (tryIp("netns", "pids", ns) ?? "")
        .split(/\s+/)
        .map(Number)
        .filter((p) => Number.isInteger(p) && p > 1 && p !== process.pid);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      Bun.sleepSync(50);
    }
    tryIp("netns", "del", ns);
  }
}

/** Labs whose owner process is gone (it was SIGKILLed before its exit hook ran). */
function reapStaleLabs(): void {
  if (!existsSync(MARKERS)) return;
  for (const f of readdirSync(MARKERS)) {
    if (!f.endsWith(".json")) continue;
    const path = join(MARKERS, f);
    try {
      const m = JSON.parse(readFileSync(path, "utf8")) as { pid: number; namespaces: string[]; dirs?: string[] };
      if (alive(m.pid)) continue;
      removeNamespaces(m.namespaces.filter((n) => /^pc[0-9a-f]{6}-(br|h\d+)$/.test(n)));
      for (const d of m.dirs ?? []) if (d.startsWith(join(tmpdir(), "pc"))) rmSync(d, { recursive: true, force: true });
      rmSync(path, { force: true });
    } catch {
      // unreadable marker: leave it
    }
  }
}

/** Whether the process exists and is not a zombie (a killed owner may not be reaped yet). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

function cleanupAll(): void {
  for (const lab of [...live.values()]) lab.cleanup();
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on("exit", cleanupAll);
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    const handler = () => {
      cleanupAll();
      process.off(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}
