// Second entry point of a compiled coordinator: the Temporal worker's workflow thread. The build rewrites
// the SDK's `new Worker(require.resolve(...))` to start this file, which the executable embeds.
import "@temporalio/worker/lib/workflow/workflow-worker-thread";
