import { inspect } from 'node:util';
import { InvalidAppendError } from '../errors.js';
import type { NewEvent } from './types.js';

/** Long enough for any real stream id (category + UUIDs), short enough to keep the unique index healthy. */
export const MAX_STREAM_NAME_LENGTH = 512;
export const MAX_EVENTS_PER_APPEND = 10_000;

export interface SerialisedBatch {
  types: string[];
  data: string[];
  metadata: string[];
}

function serialise(what: string, value: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (error) {
    // BigInt and cycles land here.
    throw new InvalidAppendError(`${what} is not JSON-serialisable: ${(error as Error).message}`, { cause: error });
  }
  if (json === undefined) throw new InvalidAppendError(`${what} is not JSON-serialisable (got ${typeof value})`);
  return json;
}

/** Checks everything before anything is written, and serialises once so the database never sees a bad value. */
export function validateAppend(streamName: unknown, events: unknown, expectedVersion: unknown): SerialisedBatch {
  if (typeof streamName !== 'string' || streamName.trim() === '') {
    throw new InvalidAppendError('stream name must be a non-empty string');
  }
  if (streamName.length > MAX_STREAM_NAME_LENGTH) {
    throw new InvalidAppendError(`stream name is ${streamName.length} characters; the limit is ${MAX_STREAM_NAME_LENGTH}`);
  }
  if (streamName.includes('\u0000')) throw new InvalidAppendError('stream name contains a NUL character');
  if (!Array.isArray(events) || events.length === 0) {
    throw new InvalidAppendError(`append to "${streamName}" needs at least one event`);
  }
  if (events.length > MAX_EVENTS_PER_APPEND) {
    throw new InvalidAppendError(`append of ${events.length} events; the limit is ${MAX_EVENTS_PER_APPEND} per append`);
  }
  if (expectedVersion !== undefined && (typeof expectedVersion !== 'bigint' || expectedVersion < 0n)) {
    if (!(typeof expectedVersion === 'number' && Number.isSafeInteger(expectedVersion) && expectedVersion >= 0)) {
      throw new InvalidAppendError(`expectedVersion must be a non-negative integer, got ${inspect(expectedVersion)}`);
    }
  }
  const batch: SerialisedBatch = { types: [], data: [], metadata: [] };
  events.forEach((event: Partial<NewEvent> | null, index) => {
    const at = `event ${index} of "${streamName}"`;
    if (event === null || typeof event !== 'object') throw new InvalidAppendError(`${at} is not an object`);
    if (typeof event.type !== 'string' || event.type.trim() === '') {
      throw new InvalidAppendError(`${at} needs a non-empty string type`);
    }
    batch.types.push(event.type);
    batch.data.push(serialise(`${at} (${event.type}) data`, event.data));
    const metadata = event.metadata ?? {};
    if (typeof metadata !== 'object' || Array.isArray(metadata)) {
      throw new InvalidAppendError(`${at} (${event.type}) metadata must be an object`);
    }
    batch.metadata.push(serialise(`${at} (${event.type}) metadata`, metadata));
  });
  return batch;
}
