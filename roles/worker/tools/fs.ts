// PicoClaw's built-in file tools, with its names and arguments: read_file, write_file, edit_file,
// append_file, list_dir. Every path goes through the node's sandbox; errors name the path as the model
// wrote it, so it can correct itself.
import { appendFile, mkdir, open, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Sandbox } from "../sandbox.ts";
import { stringArg, type Tool, ToolError, type ToolResult } from "./index.ts";

const ok = (content: string): ToolResult => ({ content, isError: false });

const pathParam = (what: string) => ({ type: "string", description: `${what} (relative to the workspace, or absolute)` });

function schema(properties: Record<string, unknown>): Record<string, unknown> {
  return { type: "object", properties, required: Object.keys(properties), additionalProperties: false };
}

/** Turns the file system's codes into sentences about the model's path. */
function fsError(err: unknown, path: string): never {
  if (err instanceof ToolError) throw err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") throw new ToolError(`no such file: ${path}`);
  if (code === "EISDIR") throw new ToolError(`${path} is a directory, not a file`);
  if (code === "ENOTDIR") throw new ToolError(`${path}: a part of the path is a file, not a directory`);
  if (code === "EACCES" || code === "EPERM") throw new ToolError(`permission denied: ${path}`);
  throw new ToolError(`${path}: ${(err as Error).message}`);
}

/** Runs a file operation, turning its failure into a ToolError naming `path`. */
async function onPath<T>(path: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    return fsError(err, path);
  }
}

const count = (text: string, part: string) => text.split(part).length - 1;

/** read_file reads at most this much (tools.max_output_bytes, at most 1 MiB, cuts the rest anyway). */
const MAX_READ_BYTES = 1024 * 1024;
/** edit_file rewrites whole files; larger ones are refused rather than held in memory. */
const MAX_EDIT_BYTES = 16 * 1024 * 1024;

/** The first `limit` bytes of a file as text, and a note when there was more. */
async function readHead(path: string, limit: number): Promise<string> {
  const f = await open(path, "r");
  try {
    const buf = Buffer.alloc(limit + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await f.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n <= limit) return buf.subarray(0, n).toString("utf8");
    const size = (await f.stat()).size;
    return `${buf.subarray(0, limit).toString("utf8")}\n[file cut: only the first ${limit} bytes${size > limit ? ` of ${size}` : ""} are shown]`;
  } finally {
    await f.close();
  }
}

export function fileTools(sandbox: Sandbox): Tool[] {
  const readFileTool: Tool = {
    name: "read_file",
    description: "Read a text file and return its contents.",
    parameters: schema({ path: pathParam("The file to read") }),
    replaySafe: true,
    async execute(args) {
      const path = stringArg(args, "path");
      const real = await sandbox.resolveRead(path);
      return ok(await onPath(path, () => readHead(real, MAX_READ_BYTES)));
    },
  };

  const writeFileTool: Tool = {
    name: "write_file",
    description: "Write a text file, replacing it if it exists; missing parent directories are created.",
    parameters: schema({ path: pathParam("The file to write"), content: { type: "string", description: "The whole new content" } }),
    // Writing the same content again leaves the same file.
    replaySafe: true,
    async execute(args) {
      const path = stringArg(args, "path");
      const content = stringArg(args, "content");
      const real = await sandbox.resolveWrite(path);
      await onPath(path, async () => {
        await mkdir(dirname(real), { recursive: true });
        await writeFile(real, content);
      });
      return ok(`wrote ${Buffer.byteLength(content)} bytes to ${path}`);
    },
  };

  const editFileTool: Tool = {
    name: "edit_file",
    description: "Replace old_text with new_text in a file. old_text must occur exactly once: include enough surrounding text.",
    parameters: schema({
      path: pathParam("The file to edit"),
      old_text: { type: "string", description: "The exact text to replace; it must occur exactly once in the file" },
      new_text: { type: "string", description: "The text to put in its place" },
    }),
    replaySafe: false,
    async execute(args) {
      const path = stringArg(args, "path");
      const oldText = stringArg(args, "old_text");
      const newText = stringArg(args, "new_text");
      if (oldText === "") throw new ToolError(`argument "old_text" must not be empty`, "bad_arguments");
      const real = await sandbox.resolveWrite(path);
      const text = await onPath(path, async () => {
        if ((await stat(real)).size > MAX_EDIT_BYTES)
          throw new ToolError(`${path} is over ${MAX_EDIT_BYTES} bytes; edit_file will not rewrite it`);
        return readFile(real, "utf8");
      });
      const times = count(text, oldText);
      if (times !== 1) {
        const where = times === 0 ? "does not occur" : `occurs ${times} times`;
        throw new ToolError(`old_text ${where} in ${path}; it must occur exactly once (include more surrounding text)`);
      }
      const at = text.indexOf(oldText);
      await onPath(path, () => writeFile(real, text.slice(0, at) + newText + text.slice(at + oldText.length)));
      return ok(`edited ${path}`);
    },
  };

  const appendFileTool: Tool = {
    name: "append_file",
    description: "Append text to the end of a file, creating it (and its parent directories) if missing.",
    parameters: schema({ path: pathParam("The file to append to"), content: { type: "string", description: "The text to append" } }),
    replaySafe: false,
    async execute(args) {
      const path = stringArg(args, "path");
      const content = stringArg(args, "content");
      const real = await sandbox.resolveWrite(path);
      await onPath(path, async () => {
        await mkdir(dirname(real), { recursive: true });
        await appendFile(real, content);
      });
      return ok(`appended ${Buffer.byteLength(content)} bytes to ${path}`);
    },
  };

  const listDirTool: Tool = {
    name: "list_dir",
    description: "List a directory: one entry per line, sorted, directories ending in '/'.",
    parameters: schema({ path: pathParam("The directory to list ('.' is the workspace)") }),
    replaySafe: true,
    async execute(args) {
      const path = stringArg(args, "path");
      const real = await sandbox.resolveRead(path);
      const entries = await onPath(path, async () => {
        if (!(await stat(real)).isDirectory()) throw new ToolError(`${path} is a file, not a directory`);
        return readdir(real, { withFileTypes: true });
      });
      const names = entries.map((e) => (e.isDirectory() ? `${e.name}/` : e.name)).sort();
      return ok(names.length ? names.join("\n") : `(${path} is empty)`);
    },
  };

  return [readFileTool, writeFileTool, editFileTool, appendFileTool, listDirTool];
}
