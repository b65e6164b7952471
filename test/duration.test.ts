// Durations as users write them in flags, env and the config file ("10s", "500ms", "2m").
import { describe, expect, test } from "bun:test";
import { formatDuration, parseDuration } from "../lib/duration.ts";

describe("parseDuration", () => {
  const valid: [string, number][] = [
    ["10s", 10_000],
    ["500ms", 500],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["1m30s", 90_000],
    ["1h30m", 5_400_000],
    ["250", 250],
    ["0", 0],
    ["1.5s", 1_500],
    [" 10s ", 10_000],
  ];
  for (const [text, ms] of valid) {
    test(`${JSON.stringify(text)} is ${ms}ms`, () => {
      expect(parseDuration(text)).toBe(ms);
    });
  }

  const invalid = ["10q", "", "s", "-1s", "10 s", "ms10", "10s!", "1x30s", "abc"];
  for (const text of invalid) {
    test(`${JSON.stringify(text)} is not a duration`, () => {
      expect(parseDuration(text)).toBeUndefined();
    });
  }

  test("a number (from YAML) is taken as milliseconds; a negative one is rejected", () => {
    expect(parseDuration(2000)).toBe(2000);
    expect(parseDuration(-5)).toBeUndefined();
    expect(parseDuration(Number.NaN)).toBeUndefined();
  });
});

describe("formatDuration", () => {
  test("the dashboard's uptime from the guide: 8100000ms is 2h15m", () => {
    expect(formatDuration(8_100_000)).toBe("2h15m");
  });

  test("minutes with seconds, plain seconds, and sub-second values", () => {
    expect(formatDuration(184_000)).toBe("3m4s");
    expect(formatDuration(45_000)).toBe("45s");
    expect(formatDuration(950)).toBe("950ms");
    expect(formatDuration(0)).toBe("0ms");
  });

  test("formatting then parsing gives back whole minutes and seconds", () => {
    for (const ms of [1_000, 90_000, 8_100_000]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });
});
