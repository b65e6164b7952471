// `bun run build`: each entry script in roles/ becomes a standalone executable in dist/. The coordinator
// and the all-in-one carry the Temporal worker (see scripts/temporal-build.ts); the others do not.
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { bundleRequestWorkflow, temporalCompilePlugin } from "./temporal-build.ts";

const root = resolve(import.meta.dir, "..");
const target = `bun-${process.platform}-${process.arch}`;
const WITH_TEMPORAL = new Set(["coordinator.ts", "picoclaw.ts"]);

const workflowCode = await bundleRequestWorkflow(root);
const roles = readdirSync(join(root, "roles")).filter((f) => f.endsWith(".ts"));
for (const file of roles) {
  const name = file === "picoclaw.ts" ? "picoclaw" : `picoclaw-${file.replace(/\.ts$/, "")}`;
  const outfile = join(root, "dist", name);
  const started = Date.now();
  const temporal = WITH_TEMPORAL.has(file);
  const result = await Bun.build({
    entrypoints: [join(root, "roles", file), ...(temporal ? [join(root, "roles/coordinator/temporal/workflow-thread.ts")] : [])],
    compile: { target: target as Bun.Build.CompileTarget, outfile },
    // Entry paths inside the executable are relative to roles/, whichever entries a build has.
    root: join(root, "roles"),
    target: "bun",
    minify: true,
    // JavaScriptCore bytecode in the executable: start-up skips parsing and compiling ~800 modules
    // (worker start to joined: ~200 ms -> ~70 ms here); ESM keeps top-level await.
    bytecode: true,
    format: "esm",
    loader: { ".wasm": "file" },
    plugins: temporal ? [temporalCompilePlugin(target, workflowCode, "./coordinator/temporal/workflow-thread.ts")] : [],
  });
  if (!result.success) {
    console.error(`build of roles/${file} failed:\n${result.logs.map(String).join("\n")}`);
    process.exit(1);
  }
  console.log(`built dist/${name} (${(Bun.file(outfile).size / 1048576).toFixed(1)} MiB, ${Date.now() - started}ms)`);
}
