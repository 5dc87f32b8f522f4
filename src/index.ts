export { EventStore, type EventStoreOptions, type AppendOptions } from './store/event-store.js';
export type { NewEvent, StoredEvent, AppendResult } from './store/types.js';
export * from './errors.js';
export { defineProjection, type Projection } from './projection/projection.js';
export { Runner, type RunnerOptions } from './runner/runner.js';
export { ProjectionWaiter, type ProjectionWaiterOptions, type WaitOptions, type WaitResult } from './wait/waiter.js';
