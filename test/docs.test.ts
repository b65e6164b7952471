// The documentation stands on its own and does not rot:
// - every relative link in README.md and docs/*.md leads to a file inside the repository, and its
//   #anchor to a heading of that file (GitHub's slugs); nothing points outside (a clone has no ../shared);
// - README.md stays the first fifteen minutes (at most 220 lines);
// - config.example.yaml loads with the real config loader, its commented-out settings too, and the
//   README's config example says what the file says;
// - docs/README.md lists every page of docs/;
// - every command in the ```bash blocks of README.md, docs/deploy.md and docs/security.md is run by a
//   test: test/deploy-docs.test.ts names it as written, or the table below says which test runs it (or
//   why none can here, which the page says too).
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { loadConfig } from "../lib/config.ts";
import { ROOT } from "./helpers/role-process.ts";

const DOCS = join(ROOT, "docs");
const PAGES = [
  "README.md",
  ...readdirSync(DOCS)
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`),
];
const read = (file: string) => readFileSync(join(ROOT, file), "utf8");

/** The text outside fenced code blocks, one entry per line (line numbers kept: blocks become ""). */
function proseLines(text: string): string[] {
  let fence: string | undefined;
  return text.split("\n").map((line) => {
    const m = /^\s*(`{3,}|~{3,})/.exec(line);
    if (m) {
      if (fence === undefined) fence = m[1]![0]!;
      else if (m[1]![0] === fence) fence = undefined;
      return "";
    }
    return fence === undefined ? line : "";
  });
}

/** GitHub's anchor for a heading: lower-case, markup and punctuation dropped (but - and _), spaces to '-'. */
function slug(heading: string): string {
  return heading
    .replace(/`([^`]*)`/g, "$1")
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .replace(/[*_]{2}([^*_]+)[*_]{2}/g, "$1")
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M} _-]/gu, "")
    .replace(/ /g, "-");
}

/** Every anchor a markdown file offers: its headings' slugs, numbered like GitHub's when repeated. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of proseLines(read(file))) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

interface Link {
  file: string;
  line: number;
  target: string;
}

/** Markdown links and images `[text](target)` outside code blocks and code spans. */
function links(file: string): Link[] {
  const out: Link[] = [];
  proseLines(read(file)).forEach((raw, i) => {
    const line = raw.replace(/`[^`]*`/g, "``");
    for (const m of line.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ file, line: i + 1, target: m[1]! });
  });
  return out;
}

const external = (target: string) => /^(https?:|mailto:)/i.test(target);

describe("links in README.md and docs/*.md", () => {
  const all = PAGES.flatMap(links);

  test("the pages have links to check (the parser is not blind)", () => {
    expect(all.filter((l) => l.file === "README.md" && !external(l.target)).length).toBeGreaterThan(10);
    expect(all.filter((l) => l.target.includes("#")).length).toBeGreaterThan(5);
    expect(slug("The swarm as an OpenAI model: `picoclaw gateway`")).toBe("the-swarm-as-an-openai-model-picoclaw-gateway");
    expect(slug("1. Local development (embedded NATS)")).toBe("1-local-development-embedded-nats");
    expect(slug("Tokens: per request, node, capability and model")).toBe("tokens-per-request-node-capability-and-model");
  });

  test("no page mentions ../shared (a clone has no such folder)", () => {
    expect(PAGES.filter((f) => read(f).includes("../shared"))).toEqual([]);
  });

  test("every relative link leads to a file inside the repository, and every #anchor to a heading there", () => {
    const broken: string[] = [];
    for (const l of all) {
      if (external(l.target)) continue;
      const where = `${l.file}:${l.line} (${l.target})`;
      const [path, anchor] = l.target.split("#", 2) as [string, string | undefined];
      const target = path === "" ? join(ROOT, l.file) : resolve(dirname(join(ROOT, l.file)), decodeURIComponent(path));
      if (target !== ROOT && !target.startsWith(ROOT + sep)) {
        broken.push(`${where}: leaves the repository`);
        continue;
      }
      if (!existsSync(target)) {
        broken.push(`${where}: no such file ${relative(ROOT, target)}`);
        continue;
      }
      if (anchor === undefined) continue;
      if (!target.endsWith(".md") || statSync(target).isDirectory()) {
        broken.push(`${where}: an anchor into a file that is not markdown`);
        continue;
      }
      if (!anchors(relative(ROOT, target)).has(anchor)) broken.push(`${where}: no heading with the anchor #${anchor}`);
    }
    expect(broken).toEqual([]);
  });
});

describe("README.md", () => {
  test("is the first fifteen minutes: at most 220 lines", () => {
    const lines = read("README.md").split("\n").length;
    expect(lines).toBeLessThanOrEqual(220);
  });

  test("keeps the two commands as they are", () => {
    const readme = read("README.md");
    expect(readme).toContain(
      "npm run demo   # brings up a local swarm on embedded NATS, runs the guide's code review, shows the dashboard",
    );
    expect(readme).toContain(
      "npm test       # the whole test suite (real nats-server, Temporal, Docker, Chromium, role processes), ~35 minutes on 2 cores",
    );
  });
});

/** The README's config example: the yaml block that starts with `# ~/.picoclaw/config.yaml`. */
function readmeConfig(): string {
  const block = /```yaml\n(# ~\/\.picoclaw\/config\.yaml\n[\s\S]*?)```/.exec(read("README.md"));
  if (!block) throw new Error("README.md has no ```yaml block starting with # ~/.picoclaw/config.yaml");
  return block[1]!;
}

/** Loads YAML text as a config file (no flags, no environment), as every process does. */
function loadText(text: string) {
  const dir = mkdtempSync(join(tmpdir(), "picoclaw-docs-"));
  try {
    const path = join(dir, "config.yaml");
    writeFileSync(path, text);
    return loadConfig({ flags: {}, env: {}, configPath: path, home: dir });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The settings a file set itself, as dotted key -> value. */
function fromFile(loaded: ReturnType<typeof loadConfig>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, source] of Object.entries(loaded.sources)) {
    if (!source.startsWith("config file")) continue;
    out[key] = key.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], loaded.config);
  }
  return out;
}

describe("config.example.yaml", () => {
  const example = () => loadConfig({ flags: {}, env: {}, configPath: join(ROOT, "config.example.yaml") });

  test("loads with the real config loader, with the values the README shows", () => {
    const { config, file } = example();
    expect(file).toBe(join(ROOT, "config.example.yaml"));
    expect(config.swarm.role).toBe("worker");
    expect(config.swarm.capabilities).toEqual(["code", "research"]);
    expect(config.swarm.max_concurrent).toBe(3);
    expect(config.swarm.nats.urls).toEqual(["nats://localhost:4222"]);
    expect(config.swarm.nats.heartbeat_interval).toBe(5_000);
    expect(config.swarm.nats.node_timeout).toBe(20_000);
    expect(config.swarm.tasks.request_timeout).toBe(600_000);
    expect(config.llm.provider).toBe("auto");
    expect(config.log.level).toBe("info");
    // Nothing that would surprise a newcomer who copies it: no node by itself, the offline LLM, no tools beyond files.
    expect(config.swarm.enabled).toBe(false);
    expect(config.llm.base_url).toBeUndefined();
    expect(config.tools.exec.enabled).toBe(false);
  });

  test("the README's example sets exactly what the file sets, to the same values", () => {
    const readme = fromFile(loadText(readmeConfig()));
    const file = fromFile(example());
    expect(Object.keys(readme).length).toBeGreaterThan(5);
    expect(readme).toEqual(file);
  });

  test("every commented-out setting (tools:, agents:, security: ...) loads too once uncommented", () => {
    const text = read("config.example.yaml");
    const uncommented = text
      .split("\n")
      .map((l) => l.replace(/^(\s*)# (\s*[a-z_]+:.*)$/, "$1$2"))
      .join("\n");
    expect(uncommented).not.toBe(text);
    const { config, sources } = loadText(uncommented);
    expect(config.tools.exec.enabled).toBe(true);
    expect(config.tools.isolation.enabled).toBe(true);
    expect(Object.keys(config.tools.mcp.servers)).toEqual(["files"]);
    expect(config.agents.defaults.workspace).toBe("/srv/picoclaw/work");
    expect(config.swarm.security.signing).toBe(true);
    expect(config.llm.base_url).toBe("http://localhost:11434/v1");
    expect(sources["swarm.http.listen"]).toStartWith("config file");
  });
});

describe("docs/README.md", () => {
  test("links every page of docs/, each on its own line with what is in it", () => {
    const index = read("docs/README.md");
    const pages = readdirSync(DOCS).filter((f) => f.endsWith(".md") && f !== "README.md");
    expect(pages.length).toBeGreaterThan(10);
    const missing = pages.filter(
      (p) => !new RegExp(`^\\| \\[${p.replace(/\./g, "\\.")}\\]\\(${p.replace(/\./g, "\\.")}\\) \\| \\S`, "m").test(index),
    );
    expect(missing).toEqual([]);
  });
});

/** The commands of a page's ```bash blocks, as test/deploy-docs.test.ts reads them. */
function bashCommands(file: string): string[] {
  const out: string[] = [];
  for (const m of read(file).matchAll(/^```bash\n([\s\S]*?)^```$/gm)) {
    for (const raw of m[1]!.replace(/\\\n\s*/g, "").split("\n")) {
      let quote: string | undefined;
      let line = raw;
      for (let i = 0; i < raw.length; i++) {
        const c = raw[i]!;
        if (quote) {
          if (c === quote) quote = undefined;
        } else if (c === "'" || c === '"') quote = c;
        else if (c === "#" && (i === 0 || /\s/.test(raw[i - 1]!))) {
          line = raw.slice(0, i);
          break;
        }
      }
      const cmd = line.trim().replace(/\s*&$/, "");
      if (cmd) out.push(cmd);
    }
  }
  return out;
}

/**
 * Documented commands that test/deploy-docs.test.ts does not run as written: the test that runs them
 * (a file and a string in it, usually the test's name), or why nothing can run them here.
 */
const RUN_ELSEWHERE: Record<string, { file: string; has: string } | { notRun: string }> = {
  "npm test": { notRun: "it is the test suite itself (scripts/test.sh runs every test file)" },
  "picoclaw --swarm.role worker --tools.exec.enabled --tools.approval.required exec,write_file,edit_file,append_file": {
    file: "test/approvals.test.ts",
    has: 'const APPROVE_WRITES = ["--tools.approval.required", "write_file,exec"]',
  },
  "picoclaw approvals": { file: "test/approvals.test.ts", has: 'cli(swarm, ["approvals"])' },
  'picoclaw approve ap-3f9a0c1b2d --note "release branch"': {
    file: "test/approvals.test.ts",
    has: 'cli(swarm, ["approve", id, "--note", "release is go"])',
  },
  'picoclaw deny ap-3f9a0c1b2d --reason "not on prod"': {
    file: "test/approvals.test.ts",
    has: 'cli(swarm, ["deny", id, "--reason", "not on a Friday"])',
  },
  'alias picoclaw="bun run $PWD/roles/picoclaw.ts"': { file: "test/helpers/role-process.ts", has: '["bun", join(ROOT, "roles", script)' },
  "bun run roles/picoclaw.ts --swarm.enabled --swarm.role coordinator --swarm.nats.embedded": {
    file: "test/deploy-docs.test.ts",
    has: '"picoclaw --swarm.enabled --swarm.role coordinator --swarm.nats.embedded"',
  },
  "bun run build && ./dist/picoclaw --swarm.enabled --swarm.role worker --swarm.nats.embedded": {
    file: "test/compiled.test.ts",
    has: "compiled picoclaw runs the guide's commands",
  },
  "sudo install -D -m 644 docs/nats-cluster.conf /etc/nats/picoclaw-cluster.conf": {
    notRun: "sudo; the test reads docs/nats-cluster.conf itself",
  },
  "NATS_SERVER_NAME=machine1 NATS_TOKEN=<token> nats-server -c /etc/nats/picoclaw-cluster.conf": {
    file: "test/deploy-docs.test.ts",
    has: 'Bun.spawn(["nats-server", "-c", conf], {\n      env: { ...process.env, NATS_SERVER_NAME: s.name, NATS_TOKEN: TOKEN }',
  },
  "curl -s localhost:8222/healthz": { file: "test/deploy-docs.test.ts", has: "/healthz`)" },
  "npm run image": { file: "test/container.test.ts", has: '["bash", "scripts/image.sh"]' },
  "export NATS_IMAGE=$(npm run -s image:nats)": { file: "test/container.test.ts", has: '["bash", "scripts/nats-image.sh"]' },
  "docker-compose up -d": { file: "test/container.test.ts", has: 'compose(["up", "-d"]' },
  "docker-compose --profile specialists up -d": {
    file: "test/compose.test.ts",
    has: "profile specialists: the guide's four code-review specialists",
  },
  'docker-compose exec coordinator picoclaw submit "Review this change: the HTTP client now retries failed requests"': {
    file: "test/container.test.ts",
    has: '["exec", "-T", "coordinator", "picoclaw", "submit", REVIEW]',
  },
  "docker-compose logs -f dashboard": { file: "test/container.test.ts", has: "the dashboard's log: a frame when the swarm changed" },
  "curl -s 127.0.0.1:8080/metrics": { file: "test/container.test.ts", has: "dashboardPort}/metrics" },
  "docker-compose --profile specialists down": { file: "test/container.test.ts", has: 'compose(["down", "-v"' },
  "npm run image && kind load docker-image picoclaw:latest": { notRun: "no Kubernetes cluster here (docs/deploy.md says so)" },
  "kubectl create namespace picoclaw && kubectl apply -k k8s/ -n picoclaw": {
    file: "test/k8s.test.ts",
    has: "`kubectl kustomize k8s` (or `kustomize build`) builds the same objects (offline)",
  },
  'kubectl -n picoclaw exec deploy/picoclaw-coordinator -- picoclaw submit "Review this change: ..."': {
    file: "test/k8s-nats.test.ts",
    has: "docs/deploy.md's `kubectl exec deploy/picoclaw-coordinator -- picoclaw submit ...`",
  },
  "kubectl -n picoclaw exec deploy/picoclaw-dashboard -- picoclaw --swarm.dashboard --once": {
    file: "test/k8s-nats.test.ts",
    has: 'runRole("picoclaw.ts", ["--swarm.dashboard", "--once"]',
  },
  "sudo install -m 755 dist/picoclaw /usr/local/bin/picoclaw": { notRun: "sudo, and no systemd as PID 1 here (docs/deploy.md says so)" },
  "sudo useradd --system --home-dir /var/lib/picoclaw --shell /usr/sbin/nologin picoclaw": { notRun: "sudo" },
  "sudo install -d -m 750 -o root -g picoclaw /etc/picoclaw": { notRun: "sudo" },
  "sudo install -m 640 -o root -g picoclaw docs/picoclaw-worker.env /etc/picoclaw/worker.env": {
    file: "test/deploy-docs.test.ts",
    has: 'readFileSync(join(ROOT, "docs/picoclaw-worker.env"), "utf8")',
  },
  "sudo install -m 644 'docs/picoclaw@.service' /etc/systemd/system/": {
    file: "test/deploy-docs.test.ts",
    has: "systemd-analyze verify accepts the unit",
  },
  "sudo systemctl daemon-reload && sudo systemctl enable --now picoclaw@worker": {
    file: "test/deploy-docs.test.ts",
    has: "the process it starts, with the environment file, joins",
  },
  "journalctl -u picoclaw@worker -f": { notRun: "no systemd as PID 1 here" },
  "temporal server start-dev": { file: "test/helpers/temporal-server.ts", has: '"server", "start-dev"' },
};

describe("every documented command is run by a test", () => {
  const RUNNER = read("test/deploy-docs.test.ts");
  const pages = ["README.md", "docs/deploy.md", "docs/security.md"];
  const commands = pages.flatMap((file) => bashCommands(file).map((cmd) => ({ file, cmd })));

  test("the pages have the commands this checks", () => {
    expect(commands.length).toBeGreaterThan(50);
  });

  test("each command of README.md, docs/deploy.md and docs/security.md is named by test/deploy-docs.test.ts or listed here", () => {
    const unrun = commands.filter(({ cmd }) => !RUNNER.includes(cmd) && !(cmd in RUN_ELSEWHERE)).map(({ file, cmd }) => `${file}: ${cmd}`);
    expect(unrun).toEqual([]);
  });

  test("each command listed here is still documented, and the test named runs it", () => {
    const documented = new Set(commands.map((c) => c.cmd));
    const stale = Object.keys(RUN_ELSEWHERE).filter((cmd) => !documented.has(cmd));
    expect(stale).toEqual([]);
    const missing = Object.entries(RUN_ELSEWHERE)
      .filter(([, where]) => "file" in where && !read(where.file).includes(where.has))
      .map(([cmd, where]) => `${cmd}: ${"file" in where ? `${where.file} has no ${where.has}` : ""}`);
    expect(missing).toEqual([]);
  });
});
