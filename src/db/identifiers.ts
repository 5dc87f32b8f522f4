import { ConfigError } from '../errors.js';

/**
 * Every identifier that comes from configuration (schema, table, channel) passes through here: validated against a
 * conservative pattern, then quoted. Both, because quoting alone still lets "a; drop…" through as a (weird) name, and
 * validation alone breaks the day a rule is relaxed.
 */
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

export function validateIdentifier(setting: string, value: string): string {
  if (!IDENTIFIER.test(value)) {
    throw new ConfigError(setting, `"${value}" is not a valid identifier (lower-case letters, digits, _; at most 63)`);
  }
  return value;
}

export function quoteIdentifier(value: string): string {
  return `"${value.replaceAll('"', '""')}"`;
}

export interface StoreNamesOptions {
  /** Schema holding the events table and the runner's tables. Default `public`. */
  schema?: string;
  /** Events table. Default `events`. */
  table?: string;
  /** NOTIFY channel the writer signals on. Default `events`. */
  channel?: string;
}

/** Fully qualified, quoted names of every database object, computed once. */
export interface StoreNames {
  schema: string;
  table: string;
  channel: string;
  /** Channel the high-water leader uses to wake projectors in other instances. */
  highWaterChannel: string;
  /** Channel a replay request is announced on. */
  replayChannel: string;
  q: {
    schema: string;
    events: string;
    sequence: string;
    sequenceLiteral: string;
    appendFunction: string;
    /** The column default of global_position: a transaction id first, then the sequence (migration 3). */
    nextPositionFunction: string;
    migrations: string;
    checkpoints: string;
    gaps: string;
    highWater: string;
    lateDeliveries: string;
    skippedPositions: string;
    replays: string;
    deadLetters: string;
    commands: string;
  };
}

export function storeNames(options: StoreNamesOptions = {}): StoreNames {
  const schema = validateIdentifier('schema', options.schema ?? 'public');
  const table = validateIdentifier('table', options.table ?? 'events');
  const channel = validateIdentifier('channel', options.channel ?? 'events');
  const qs = quoteIdentifier(schema);
  const qualified = (name: string) => `${qs}.${quoteIdentifier(name)}`;
  const sequence = qualified(`${table}_global_position_seq`);
  return {
    schema,
    table,
    channel,
    highWaterChannel: `${channel}_high_water`,
    replayChannel: `${channel}_replay`,
    q: {
      schema: qs,
      events: qualified(table),
      sequence,
      // nextval()/pg_sequence_last_value() take a regclass literal: the quoted name inside a string literal.
      sequenceLiteral: `'${sequence.replaceAll("'", "''")}'`,
      appendFunction: qualified(`${table}_append`),
      nextPositionFunction: qualified(`${table}_next_position`),
      migrations: qualified(`${table}_migrations`),
      checkpoints: qualified('projection_checkpoints'),
      gaps: qualified('projection_gaps'),
      highWater: qualified('projection_high_water'),
      lateDeliveries: qualified('projection_late_deliveries'),
      skippedPositions: qualified('projection_skipped_positions'),
      replays: qualified('projection_replays'),
      deadLetters: qualified('projection_dead_letters'),
      commands: qualified('projection_commands'),
    },
  };
}
