// One place for the version nodes advertise in heartbeats.
import pkg from "../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
