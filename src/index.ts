export { EventStore, type EventStoreOptions, type AppendOptions } from './store/event-store.js';
export type { NewEvent, StoredEvent, AppendResult } from './store/types.js';
export * from './errors.js';
