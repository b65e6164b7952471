// Logging: consola with `key=value` fields, so a person reads it and a test can grep it.
// consola/core: the same createConsola without the default reporters and environment probing, which
// cost ~13 ms at every start-up (compiled worker: start to joined).
import { type ConsolaInstance, createConsola } from "consola/core";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type Fields = Record<string, string | number | boolean | undefined>;

const CONSOLA_LEVEL: Record<LogLevel, number> = { error: 0, warn: 1, info: 3, debug: 4 };

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** Warns at most once per `key` per `everyMs`; the count of suppressed lines is added to the next one. */
  warnLimited(key: string, everyMs: number, msg: string, fields?: Fields): void;
  setLevel(level: LogLevel): void;
}

export function formatFields(fields?: Fields): string {
  if (!fields) return "";
  const parts: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    const s = String(v);
    parts.push(`${k}=${/[\s"=]/.test(s) || s === "" ? JSON.stringify(s) : s}`);
  }
  return parts.length ? ` ${parts.join(" ")}` : "";
}

export function createLogger(level: LogLevel = "info", tag?: string): Logger {
  const c: ConsolaInstance = createConsola({
    level: CONSOLA_LEVEL[level],
    // One line per event: time, level, message, fields. Warnings and errors go to stderr.
    reporters: [
      {
        log(entry) {
          const name = (entry.type === "log" ? "info" : entry.type).toUpperCase().padEnd(5);
          const tagged = entry.tag ? `[${entry.tag}] ` : "";
          const line = `${new Date(entry.date).toISOString()} ${name} ${tagged}${entry.args.join(" ")}\n`;
          (entry.level <= 1 ? process.stderr : process.stdout).write(line);
        },
      },
    ],
  });
  const out = tag ? c.withTag(tag) : c;
  const limited = new Map<string, { last: number; suppressed: number }>();
  return {
    // Fields are formatted only for lines that will be written (debug lines run per message).
    debug: (m, f) => c.level >= CONSOLA_LEVEL.debug && out.debug(m + formatFields(f)),
    info: (m, f) => c.level >= CONSOLA_LEVEL.info && out.info(m + formatFields(f)),
    warn: (m, f) => out.warn(m + formatFields(f)),
    error: (m, f) => out.error(m + formatFields(f)),
    warnLimited(key, everyMs, m, f) {
      const now = Date.now();
      const seen = limited.get(key);
      if (seen && now - seen.last < everyMs) {
        seen.suppressed++;
        return;
      }
      const suppressed = seen?.suppressed ?? 0;
      limited.set(key, { last: now, suppressed: 0 });
      out.warn(m + formatFields(suppressed ? { ...f, suppressed } : f));
    },
    setLevel(l) {
      c.level = CONSOLA_LEVEL[l];
    },
  };
}
