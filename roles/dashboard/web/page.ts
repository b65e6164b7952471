// The web dashboard as one HTML string: index.html with style.css and app.ts (compiled to JavaScript by
// Bun's transpiler) inlined. Imported as a Bun macro, so it runs when the dashboard is bundled
// (`bun build --compile` puts the finished page into the executable) or loaded from source.
import { readFileSync } from "node:fs";
import { join } from "node:path";

export function webPage(): string {
  const read = (name: string) => readFileSync(join(import.meta.dir, name), "utf8");
  const script = new Bun.Transpiler({ loader: "ts", target: "browser" }).transformSync(read("app.ts"));
  // Function replacements: `$` sequences in the script or styles must be taken literally.
  return read("index.html")
    .replace("/*STYLE*/", () => read("style.css"))
    .replace("/*SCRIPT*/", () => script.replace(/<\/script/gi, "<\\/script"));
}
