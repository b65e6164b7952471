// The test LLM server (llm-server.ts) as a process of its own, so it can run where the test process
// cannot reach, e.g. inside a network namespace: `ip netns exec NS bun test/helpers/llm-server-main.ts
// --hostname 10.213.0.11`. Prints `LLM server listening url=<base url>` once it listens, a line per
// request answered, and stops on SIGTERM/SIGINT.
import { startLlmServer } from "./llm-server.ts";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const hostname = arg("hostname") ?? "127.0.0.1";
const port = Number(arg("port") ?? "0");
const server = await startLlmServer({ hostname, port });
console.log(`LLM server listening url=${server.url}`);

let reported = 0;
const tick = setInterval(() => {
  for (; reported < server.requests.length; reported++) {
    const r = server.requests[reported]!;
    const last = r.body.messages?.at(-1)?.content ?? "";
    console.log(`LLM request n=${reported + 1} at=${r.at} prompt=${JSON.stringify(last.slice(0, 60))}`);
  }
}, 100);

const stop = async () => {
  clearInterval(tick);
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
