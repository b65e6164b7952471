// The request workflow's code for the Temporal worker's sandbox. Here it is bundled when first needed
// (webpack, from node_modules: about 2 s); a compiled executable gets this module replaced by the
// bundle made at build time (scripts/build.ts), so it carries neither webpack nor source files.
import { fileURLToPath } from "node:url";

export async function workflowBundle(): Promise<{ code: string }> {
  const { bundleWorkflowCode } = await import("@temporalio/worker");
  const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
  return bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL("./workflow.ts", import.meta.url)), logger: quiet });
}
