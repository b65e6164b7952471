// Building executables that carry the Temporal worker (the coordinator, the all-in-one). The SDK finds
// four files at run time by path, which a standalone executable does not have; this plugin rewrites
// those spots so Bun embeds what they point at, and it swaps the run-time workflow bundler for the
// bundle made here. Each rewrite is an exact text replacement that fails the build if an SDK upgrade
// changes the text (the SDK is pinned: package.json, @temporalio/* 1.24.0).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { BunPlugin } from "bun";

/** The core-bridge prebuild folder of a `bun build --compile` target. */
function coreBridgeRelease(target: string): string {
  const releases: Record<string, string> = {
    "linux-x64": "x86_64-unknown-linux-gnu",
    "linux-arm64": "aarch64-unknown-linux-gnu",
    "darwin-x64": "x86_64-apple-darwin",
    "darwin-arm64": "aarch64-apple-darwin",
    "windows-x64": "x86_64-pc-windows-msvc",
  };
  const m = target.match(/^bun-(linux|darwin|windows)-(x64|arm64)/);
  const rel = m && releases[`${m[1]}-${m[2]}`];
  if (!rel || target.includes("musl")) throw new Error(`no @temporalio/core-bridge prebuild for ${target}`);
  return rel;
}

/** The request workflow, bundled for the worker's sandbox (webpack runs here, never in the executable). */
export async function bundleRequestWorkflow(root: string): Promise<string> {
  const { bundleWorkflowCode } = await import("@temporalio/worker");
  const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
  const { code } = await bundleWorkflowCode({ workflowsPath: join(root, "roles/coordinator/temporal/workflow.ts"), logger: quiet });
  return code;
}

/**
 * `workflowThread`: the workflow thread's entry point as the executable names it, relative to the main
 * entry (Bun keeps the entries' paths below their common folder, e.g. "./coordinator/temporal/workflow-thread.ts").
 */
export function temporalCompilePlugin(target: string, workflowCode: string, workflowThread: string): BunPlugin {
  const release = coreBridgeRelease(target);
  const patch = (file: string, ...edits: [from: string, to: string][]): string =>
    edits.reduce(
      (src, [from, to]) => {
        if (!src.includes(from)) throw new Error(`temporal build plugin: "${from}" not found in ${file} (did the SDK change?)`);
        return src.replace(from, to);
      },
      readFileSync(file, "utf8"),
    );
  return {
    name: "temporal-compile",
    setup(build) {
      // 1. core-bridge picks its native module at run time (releases/<target>/index.node via fs.existsSync).
      //    A literal require() makes Bun embed the .node file and load it from the executable.
      build.onLoad({ filter: /[\\/]@temporalio[\\/]core-bridge[\\/]index\.js$/ }, ({ path }) => ({
        loader: "js",
        contents: patch(
          path,
          ["const nativeLibPath = getPrebuiltPath();", ""],
          ["require(nativeLibPath)", `require("./releases/${release}/index.node")`],
        ),
      }));
      // 2. The webpack workflow bundler is never used at run time (workflows come pre-bundled): a stub
      //    keeps webpack, swc and memfs out of the executable.
      build.onLoad({ filter: /[\\/]@temporalio[\\/]worker[\\/]lib[\\/]workflow[\\/]bundler\.js$/ }, () => ({
        loader: "js",
        contents: `const no = () => { throw new Error("the workflow bundler is not in this executable: pass workflowBundle"); };
exports.defaultWorkflowInterceptorModules = [];
exports.allowedBuiltinModules = ["assert", "url", "util"];
exports.disallowedBuiltinModules = [];
exports.WorkflowCodeBundler = class { constructor() { no(); } };
exports.bundleWorkflowCode = async () => no();`,
      }));
      // 3. threaded-vm starts `new Worker(require.resolve('./workflow-worker-thread'))`: point it at the
      //    extra entry point roles/coordinator/temporal/workflow-thread.ts, which the executable embeds.
      build.onLoad({ filter: /[\\/]@temporalio[\\/]worker[\\/]lib[\\/]workflow[\\/]threaded-vm\.js$/ }, ({ path }) => ({
        loader: "js",
        contents: patch(path, ["require.resolve('./workflow-worker-thread')", JSON.stringify(workflowThread)]),
      }));
      // 4. source-map reads mappings.wasm from path.join(__dirname, ...), which is the build machine's
      //    path in an executable: require() with the file loader embeds it and gives its path.
      build.onLoad({ filter: /[\\/]source-map[\\/]lib[\\/]read-wasm\.js$/ }, ({ path }) => ({
        loader: "js",
        contents: patch(path, ['path.join(__dirname, "mappings.wasm")', 'require("./mappings.wasm")']),
      }));
      // 5. Our own run-time bundling (roles/coordinator/temporal/bundle.ts) becomes the bundle made now.
      build.onLoad({ filter: /[\\/]roles[\\/]coordinator[\\/]temporal[\\/]bundle\.ts$/ }, () => ({
        loader: "js",
        contents: `const code = ${JSON.stringify(workflowCode)};\nexport async function workflowBundle() { return { code }; }\n`,
      }));
    },
  };
}
