// Prometheus metrics in the text exposition format (version 0.0.4), without a client library: counters,
// gauges read when scraped, and histograms. Every node has one registry; roles add what they measure.

type Labels = Record<string, string>;
export type Sample = { labels?: Labels; value: number };

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  lines(): string[];
  /** Current series of a counter or gauge (histograms have none). */
  samples?(): Sample[];
}

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  /** Current value of one series (tests, the dashboard). */
  get(labels?: Labels): number;
}

export interface Histogram {
  observe(value: number, labels?: Labels): void;
}

export interface Metrics {
  counter(name: string, help: string): Counter;
  /** A gauge read when scraped: `collect` returns its series. */
  gauge(name: string, help: string, collect: () => Sample[]): void;
  /** A counter kept elsewhere (a connection's reconnects), read when scraped. */
  counterOf(name: string, help: string, collect: () => Sample[]): void;
  histogram(name: string, help: string, buckets: number[]): Histogram;
  /** The current series of a counter or gauge by name (empty when there is none): for heartbeats and dashboards. */
  read(name: string): Sample[];
  /** The whole exposition, ready for GET /metrics. */
  render(): string;
}

/** LLM call durations (seconds): from a quick local model to a long generation. */
export const LLM_SECONDS_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** Tokens of a node's LLM calls, by capability, model and type (prompt, completion). */
export const LLM_TOKENS_METRIC = "picoclaw_llm_tokens_total";

const MAX_SERIES = 2_000; // per family: label values come from the network (capabilities, models)

export function createMetrics(): Metrics {
  const families: Family[] = [];
  const add = (f: Family) => {
    if (families.some((x) => x.name === f.name)) throw new Error(`metric ${f.name} registered twice`);
    families.push(f);
  };
  return {
    counter(name, help) {
      const series = new Map<string, { labels: Labels; value: number }>();
      add({
        name,
        help,
        type: "counter",
        lines: () => [...series.values()].map((s) => `${name}${labelText(s.labels)} ${s.value}`),
        samples: () => [...series.values()].map((s) => ({ labels: s.labels, value: s.value })),
      });
      return {
        inc(labels = {}, by = 1) {
          const key = labelText(labels);
          const s = series.get(key);
          if (s) s.value += by;
          else if (series.size < MAX_SERIES) series.set(key, { labels, value: by });
        },
        get: (labels = {}) => series.get(labelText(labels))?.value ?? 0,
      };
    },
    gauge(name, help, collect) {
      add({
        name,
        help,
        type: "gauge",
        lines: () => collect().map((s) => `${name}${labelText(s.labels ?? {})} ${s.value}`),
        samples: collect,
      });
    },
    counterOf(name, help, collect) {
      add({
        name,
        help,
        type: "counter",
        lines: () => collect().map((s) => `${name}${labelText(s.labels ?? {})} ${s.value}`),
        samples: collect,
      });
    },
    histogram(name, help, buckets) {
      const sorted = [...buckets].sort((a, b) => a - b);
      const series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
      add({
        name,
        help,
        type: "histogram",
        lines: () =>
          [...series.values()].flatMap((s) => [
            ...sorted.map((le, i) => `${name}_bucket${labelText({ ...s.labels, le: String(le) })} ${s.counts[i]}`),
            `${name}_bucket${labelText({ ...s.labels, le: "+Inf" })} ${s.count}`,
            `${name}_sum${labelText(s.labels)} ${s.sum}`,
            `${name}_count${labelText(s.labels)} ${s.count}`,
          ]),
      });
      return {
        observe(value, labels = {}) {
          const key = labelText(labels);
          let s = series.get(key);
          if (!s) {
            if (series.size >= MAX_SERIES) return;
            s = { labels, counts: sorted.map(() => 0), sum: 0, count: 0 };
            series.set(key, s);
          }
          // Cumulative buckets: every bucket whose bound the value is within.
          for (let i = 0; i < sorted.length; i++) if (value <= sorted[i]!) s.counts[i]!++;
          s.sum += value;
          s.count++;
        },
      };
    },
    read: (name) => families.find((f) => f.name === name)?.samples?.() ?? [],
    render() {
      const out: string[] = [];
      for (const f of families) {
        out.push(`# HELP ${f.name} ${f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${f.name} ${f.type}`, ...f.lines());
      }
      return `${out.join("\n")}\n`;
    },
  };
}

function labelText(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return "";
  return `{${keys.map((k) => `${k}="${escapeLabel(labels[k]!)}"`).join(",")}}`;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}
