// Wakes a pull loop when there may be work: a ring while the loop is busy is remembered, so the
// loop never sleeps through it. The timeout is the fallback poll.

export interface Doorbell {
  ring(): void;
  /** Resolves true on the next ring (or at once if one came since the last wait), false after `ms`. */
  wait(ms: number): Promise<boolean>;
}

export function createDoorbell(): Doorbell {
  let rung = false;
  let wakeUp: (() => void) | undefined;
  return {
    ring() {
      rung = true;
      wakeUp?.();
    },
    async wait(ms) {
      if (!rung) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, ms);
          wakeUp = done;
          function done() {
            clearTimeout(timer);
            wakeUp = undefined;
            resolve();
          }
        });
      }
      const was = rung;
      rung = false;
      return was;
    },
  };
}
