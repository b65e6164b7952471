// The web dashboard as a person sees it: headless Chromium (Debian's, driven by playwright-core) opens the
// dashboard's page; it lists the nodes, a killed node turns offline within the detection bound, a
// submitted request appears with its DAG and completes, and its answer shows. The test saves a screenshot
// (.tmp/web-dashboard.png; with UPDATE_SCREENSHOTS=1 also docs/img/web-dashboard.png for the README).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";
import { FAST, ROOT, reaper, spawnRole } from "./helpers/role-process.ts";
import { swarmSuite } from "./helpers/suite.ts";
import { planFile, type Swarm, selfId } from "./helpers/swarm.ts";
import { requireTool } from "./helpers/tools.ts";

const suite = swarmSuite();
const procs = reaper();
const HEARTBEAT_MS = 200;
const NODE_TIMEOUT_MS = 1_500;
/** A loaded 2-core box: detection, one page update and the browser's rendering. */
const SLACK_MS = 1_500;

let browser: BrowserContext;
beforeAll(async () => {
  browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "picoclaw-chromium-")), {
    executablePath: requireTool("chromium", "apt-get install chromium"),
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
    viewport: { width: 1400, height: 1000 },
  });
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await procs.killAll();
});

test("the web page shows the nodes, a killed node going offline, and a request's DAG from start to answer", async () => {
  expect(FAST).toEqual(["--swarm.nats.heartbeat_interval", `${HEARTBEAT_MS}ms`, "--swarm.nats.node_timeout", `${NODE_TIMEOUT_MS}ms`]);
  const swarm: Swarm = await suite.start("web1", [
    { script: "coordinator.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } },
    { script: "specialist.ts", args: ["--swarm.capabilities", "code,rust"], env: suite.llmEnv() },
    { script: "specialist.ts", args: ["--swarm.capabilities", "security"], env: suite.llmEnv() },
    { script: "worker.ts", env: suite.llmEnv() },
  ]);
  const dash = procs.track(spawnRole("dashboard.ts", [...swarm.common, "--swarm.http.listen", "127.0.0.1:0"], { env: { NO_COLOR: "1" } }));
  const url = /HTTP listening url=(\S+)/.exec(await dash.waitForLine(/HTTP listening url=/, 15_000))![1]!;

  const page = await browser.newPage();
  await page.goto(url);
  await expect(page.title()).resolves.toBe("PicoClaw Swarm");
  // Every node, with its role, status, load and capabilities.
  await page.waitForFunction(`document.querySelectorAll('#nodes tr[data-status="online"]').length === ${swarm.ids.length}`, undefined, {
    timeout: 15_000,
  });
  for (const id of swarm.ids) await expect(page.locator(`tr[data-node="${id}"]`).count()).resolves.toBe(1);
  const codeRow = page.locator(`tr[data-node="${swarm.ids[1]}"]`);
  await expect(codeRow.innerText()).resolves.toMatch(/specialist\s+online\s+0% \(0\/5\)\s+code\s*rust/);
  await expect(page.locator("#stats").innerText()).resolves.toContain("4/4");

  // A request with a DAG: code and security in parallel, then a summary after both.
  const plan = planFile(
    [
      "tasks:",
      "  - { id: code, capability: code, title: code review, prompt: 'Review the code [[delay=2500]]' }",
      "  - { id: security, capability: security, title: security review, prompt: 'Review security [[delay=2500]]' }",
      "  - { id: summary, capability: general, title: summary, prompt: 'Summarise [[delay=500]]', depends_on: [code, security] }",
    ].join("\n"),
  );
  const submit = procs.track(spawnRole("picoclaw.ts", ["submit", ...swarm.common, "--plan", plan]));
  const card = page.locator(".req").first();
  await card.waitFor({ timeout: 15_000 });
  const request = (await card.getAttribute("data-request"))!;
  expect(request).toMatch(/^r-[0-9a-f]{10}$/);
  await page.waitForSelector(`[data-request="${request}"] [data-task="code"][data-state="running"]`, { timeout: 15_000 });
  await expect(card.locator("[data-task]").count()).resolves.toBe(3);
  await expect(card.locator('[data-task="summary"]').innerText()).resolves.toContain("after code, security");
  await expect(card.locator('[data-task="summary"]').getAttribute("data-state")).resolves.toBe("queued");
  // The node's row lists what it runs from its heartbeats, which can come a beat after the event above.
  await page.locator(`tr[data-node="${swarm.ids[1]}"] .running-task`, { hasText: `↳ code (code) ${request}` }).waitFor({ timeout: 5_000 });

  // It completes: every sub-task green with its node and tokens, the answer listed.
  await page.waitForSelector(`[data-request="${request}"][data-state="completed"]`, { timeout: 20_000 });
  expect(await submit.exited(15_000)).toBe(0);
  for (const task of ["code", "security", "summary"]) {
    const box = card.locator(`[data-task="${task}"]`);
    await expect(box.getAttribute("data-state")).resolves.toBe("completed");
    await expect(box.innerText()).resolves.toMatch(/on claw-[0-9a-f]{8}[\s\S]*\d+ tokens/);
  }
  await page.locator(`[data-answer="${request}"] summary`).click();
  await expect(page.locator(`[data-answer="${request}"] pre`).innerText()).resolves.toContain("## summary — completed");
  // Token totals come from the nodes' heartbeats as well.
  await page.locator("#tokens", { hasText: /code \d+/ }).waitFor({ timeout: 5_000 });

  // A node killed without a goodbye is offline on the page within node_timeout + heartbeat_interval.
  const victim = swarm.nodes[3]!;
  const victimId = selfId(victim);
  const killedAt = Date.now();
  victim.signal("SIGKILL");
  await page.waitForSelector(`tr[data-node="${victimId}"][data-status="offline"]`, { timeout: 10_000 });
  const tookMs = Date.now() - killedAt;
  expect(tookMs).toBeLessThanOrEqual(NODE_TIMEOUT_MS + HEARTBEAT_MS + SLACK_MS);
  await expect(page.locator("#stats").innerText()).resolves.toContain("3/4");

  mkdirSync(join(ROOT, ".tmp"), { recursive: true });
  const shot = join(ROOT, ".tmp", "web-dashboard.png");
  await page.screenshot({ path: shot, fullPage: true });
  if (process.env.UPDATE_SCREENSHOTS === "1") copyFileSync(shot, join(ROOT, "docs", "img", "web-dashboard.png"));
  await page.close();
}, 120_000);

test("pending tool calls: both dashboards list them; Approve and Deny work only with the approval token, a dashboard without one is read-only and says why", async () => {
  suite.llm.script((b) => {
    const user = String(b.messages?.find((m) => m.role === "user")?.content ?? "");
    const file = /<web-approve (\w+)>/.exec(user)?.[1];
    if (!file) return undefined;
    const seen = (b.messages ?? []).filter((m) => m.role === "tool");
    if (seen.length === 0)
      return {
        content: `writing ${file}`,
        tool_calls: [{ name: "write_file", arguments: JSON.stringify({ path: `${file}.txt`, content: file }) }],
      };
    return `tool said: ${seen[0]!.content}`;
  });
  try {
    const swarm: Swarm = await suite.start("web2", [
      { script: "coordinator.ts", env: { PICOCLAW_LLM_PROVIDER: "echo" } },
      { script: "worker.ts", args: ["--tools.approval.required", "write_file"], env: suite.llmEnv() },
    ]);
    const token = "approve-0123456789abcdef";
    const dashboardAt = async (args: string[]) => {
      const d = procs.track(spawnRole("dashboard.ts", [...swarm.common, "--swarm.http.listen", "127.0.0.1:0", ...args]));
      return { proc: d, url: /HTTP listening url=(\S+)/.exec(await d.waitForLine(/HTTP listening url=/, 15_000))![1]! };
    };
    const deciding = await dashboardAt(["--swarm.http.approval_token", token]);
    const readOnly = await dashboardAt([]);
    await readOnly.proc.waitForLine(/Web dashboard shows tool calls waiting for approval read-only: swarm.http.approval_token is not set/);
    const ask = (file: string) => {
      const p = procs.track(
        spawnRole("picoclaw.ts", ["submit", "--capabilities", "general", ...swarm.common, `<web-approve ${file}> write`]),
      );
      return p.waitForLine(/waiting for approval of write_file/, 30_000).then((l) => ({ p, id: /\((ap-[0-9a-f]{10}),/.exec(l)![1]! }));
    };
    const yes = await ask("yes");
    const no = await ask("no");

    // The read-only page lists both, without buttons, and says why.
    const ro = await browser.newPage();
    await ro.goto(readOnly.url);
    await ro.waitForSelector(`[data-approval="${no.id}"]`, { timeout: 15_000 });
    await expect(ro.locator("#approval-read-only").innerText()).resolves.toContain("swarm.http.approval_token is not set");
    await expect(ro.locator("#approvals button").count()).resolves.toBe(0);
    // Its route refuses a decision even with the right token.
    const refused = await fetch(`${readOnly.url.replace(/\/$/, "")}/api/approvals/decide`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-picoclaw-approval-token": token },
      body: JSON.stringify({ id: yes.id, outcome: "approved" }),
    });
    expect(refused.status).toBe(403);

    // The terminal dashboard (one frame) lists them too.
    const frame = await runRoleOnce(swarm);
    expect(frame).toContain("【Waiting for Approval】");
    expect(frame).toContain(`${yes.id}  write_file "yes.txt"`);

    const page = await browser.newPage();
    await page.goto(deciding.url);
    const row = page.locator(`[data-approval="${yes.id}"]`);
    await row.waitFor({ timeout: 15_000 });
    await expect(row.innerText()).resolves.toContain("the model said: writing yes");
    // Without the token (or with a wrong one) a click decides nothing.
    await row.locator('button[data-decide="approved"]').click();
    await expect(page.locator("#approval-result").innerText()).resolves.toBe("Enter the approval token first.");
    await page.fill("#approval-token", "not-the-token-at-all");
    await row.locator('button[data-decide="approved"]').click();
    await page.waitForFunction(
      `document.querySelector("#approval-result").textContent.includes("wrong or missing approval token")`,
      undefined,
      {
        timeout: 10_000,
      },
    );
    // With it: approve one, deny the other with a reason.
    await page.fill("#approval-token", token);
    await page.fill("#approval-by", "dana");
    await row.locator('button[data-decide="approved"]').click();
    await page.waitForFunction(
      `document.querySelector("#approval-result").textContent.includes("${yes.id}: approved by dana via dashboard")`,
    );
    const noRow = page.locator(`[data-approval="${no.id}"]`);
    await noRow.locator(".note").fill("not this file");
    await noRow.locator('button[data-decide="denied"]').click();
    await page.waitForFunction(`document.querySelector("#approval-result").textContent.includes("${no.id}: denied by dana")`);

    expect(await yes.p.exited(30_000)).toBe(0);
    expect(yes.p.output()).toContain("tool said: wrote 3 bytes to yes.txt");
    expect(await no.p.exited(30_000)).toBe(0);
    expect(no.p.output()).toContain("tool said: denied: not this file");
    // Decided calls leave both pages.
    for (const p of [page, ro]) await p.waitForSelector(`[data-approval="${yes.id}"]`, { state: "detached", timeout: 10_000 });
  } finally {
    suite.llm.script(undefined);
  }
});

/** `picoclaw dashboard --once` beside `swarm`: one frame of the terminal dashboard. */
async function runRoleOnce(swarm: Swarm): Promise<string> {
  const p = procs.track(spawnRole("picoclaw.ts", ["dashboard", "--once", ...swarm.common]));
  await p.exited(30_000);
  return p.output();
}
