import type pg from 'pg';
import { quoteIdentifier } from '../db/identifiers.js';
import { ConfigError } from '../errors.js';
import { FIELD_TYPES, type EventField, type EventTable } from './description.js';

/**
 * What the catalog says about a source's table: that it is what the source needs (checked at every start, read-only),
 * the sequence behind its positions, and what migrate may have to add (an index, the NOTIFY trigger). Every value is
 * read as text: the process may have other type parsers installed (Emmett's client installs some).
 */

interface TableFacts {
  oid: string;
  kind: string;
  columns: Array<{ name: string; type: string; attnum: number }>;
}

async function tableFacts(db: pg.Pool | pg.ClientBase, t: EventTable): Promise<TableFacts | undefined> {
  const { rows } = await db.query<{ oid: string; kind: string; columns: string }>(
    `SELECT c.oid::int8::text AS oid, c.relkind::text AS kind,
            (SELECT coalesce(json_agg(json_build_object(
                      'name', a.attname,
                      'type', (CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END)::regtype::text,
                      'attnum', a.attnum) ORDER BY a.attnum), '[]')::text
               FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [t.schema, t.name],
  );
  const row = rows[0];
  return row && { oid: row.oid, kind: row.kind, columns: JSON.parse(row.columns) as TableFacts['columns'] };
}

const FIELDS: EventField[] = ['position', 'stream', 'streamPosition', 'type', 'data', 'metadata', 'recordedAt'];
const FIELD_NAMES: Record<EventField, string> = {
  position: 'the global position',
  stream: 'the stream name',
  streamPosition: 'the stream position',
  type: 'the event type',
  data: 'the event data',
  metadata: 'the metadata',
  recordedAt: 'the recorded-at time',
};

/**
 * The table exists, is a table, and every column the source reads exists with a type it can read. Otherwise a
 * ConfigError naming the setting (and its environment variable) and what is wrong. Returns the table's facts.
 */
export async function checkEventTable(db: pg.Pool | pg.ClientBase, t: EventTable): Promise<TableFacts> {
  const facts = await tableFacts(db, t);
  const where = `${t.schema}.${t.name}`;
  if (!facts) {
    const hint =
      t.kind === 'emmett'
        ? ' (Emmett creates it on the first append: start the application once, or set --events-table)'
        : t.kind === 'message-db'
          ? ' (install message-db first, or set --events-table)'
          : '';
    throw new ConfigError(t.settingOf('table'), `table ${where} does not exist or is not visible to this role${hint}`);
  }
  if (facts.kind !== 'r' && facts.kind !== 'p') {
    throw new ConfigError(
      t.settingOf('table'),
      `${where} is not a table (relkind ${facts.kind}): the runner needs a table or a partitioned table`,
    );
  }
  for (const field of FIELDS) {
    const column = t.columns[field];
    if (!column) continue;
    const found = facts.columns.find((c) => c.name === column.name);
    if (!found) {
      throw new ConfigError(
        t.settingOf(field),
        `column "${column.name}" (${FIELD_NAMES[field]}) does not exist in ${where} (its columns: ${facts.columns.map((c) => c.name).join(', ')})`,
      );
    }
    const types = column.types ?? FIELD_TYPES[field];
    if (!types.includes(found.type)) {
      throw new ConfigError(
        t.settingOf(field),
        `column "${column.name}" of ${where} is ${found.type}: ${FIELD_NAMES[field]} must be ${types.join(' or ')}`,
      );
    }
  }
  return facts;
}

export interface PositionSequence {
  /** Qualified and quoted, as text. */
  name: string;
  /** A regclass literal of it, for nextval()/pg_sequence_last_value(). */
  literal: string;
  cache: bigint;
  /** INCREMENT BY (an identity column's too). */
  increment: bigint;
}

/**
 * The sequence behind the position column: the one owned by it (serial, bigserial, identity, OWNED BY:
 * pg_get_serial_sequence), else the one its default calls (`nextval('…')`, found through the default's dependency).
 * Undefined when there is none (positions written by the application, a function the catalog cannot see through).
 */
export async function findPositionSequence(db: pg.Pool | pg.ClientBase, t: EventTable): Promise<PositionSequence | undefined> {
  const position = t.columns.position.name;
  const { rows } = await db.query<{ name: string; cache: string; increment: string }>(
    `WITH col AS (
       SELECT a.attrelid, a.attnum FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attname = $2::text
     ), seq AS (
       SELECT coalesce(
                pg_get_serial_sequence($1::text, $2::text)::regclass::oid,
                (SELECT d.refobjid
                   FROM col JOIN pg_attrdef ad ON ad.adrelid = col.attrelid AND ad.adnum = col.attnum
                   JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                                   AND d.refclassid = 'pg_class'::regclass
                   JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
                  LIMIT 1)) AS oid
     )
     SELECT format('%I.%I', n.nspname, c.relname) AS name, s.seqcache::text AS cache, s.seqincrement::text AS increment
       FROM seq JOIN pg_sequence s ON s.seqrelid = seq.oid
       JOIN pg_class c ON c.oid = seq.oid JOIN pg_namespace n ON n.oid = c.relnamespace`,
    [t.table, position],
  );
  const row = rows[0];
  if (!row) return undefined;
  return {
    name: row.name,
    literal: `'${row.name.replaceAll("'", "''")}'`,
    cache: BigInt(row.cache),
    increment: BigInt(row.increment),
  };
}

/**
 * Refuses a position sequence that steps by other than 1 (a ConfigError naming the table, the sequence and what to
 * change). Every position the runner does not see is a gap it waits for: with INCREMENT BY 2 each event would leave a
 * dead gap behind it (and a skipped-position row per projection). Treating the positions such a sequence never
 * produces as no gaps is sound only when nothing else feeds the column, and the catalog cannot tell that apart from an
 * offset scheme (two sequences, START 1 and START 2, both INCREMENT BY 2, one of them called explicitly by a writer)
 * where every position exists: assuming half of them impossible would skip events silently. So the runner does not
 * guess. Positions with no sequence found, or the application's own, are unaffected.
 */
export async function checkPositionSequence(db: pg.Pool | pg.ClientBase, t: EventTable): Promise<void> {
  const sequence = await findPositionSequence(db, t);
  if (!sequence || sequence.increment === 1n) return;
  const column = t.columns.position.name;
  throw new ConfigError(
    t.settingOf('position'),
    `the sequence ${sequence.name} behind ${t.table} (${column}) has INCREMENT BY ${sequence.increment}: the runner waits for every position it does not see as a gap, so each value the sequence steps over would become a dead gap, and it cannot tell one sequence stepping from several writers sharing the column in an offset scheme (where every position exists). Make it hand out every position: ALTER SEQUENCE ${sequence.name} INCREMENT BY 1 (an identity column: ALTER TABLE ${t.table} ALTER COLUMN ${quoteIdentifier(column)} SET INCREMENT BY 1), with every writer taking its positions from it`,
  );
}

/** Whether a valid index on the table leads with the position column (a partitioned one: valid once complete). */
export async function hasPositionIndex(db: pg.Pool | pg.ClientBase, t: EventTable): Promise<boolean> {
  const { rows } = await db.query<{ found: boolean }>(
    `SELECT EXISTS (
       SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = $1::regclass AND a.attname = $2 AND i.indisvalid AND i.indpred IS NULL) AS found`,
    [t.table, t.columns.position.name],
  );
  return rows[0]!.found;
}

export async function hasTrigger(db: pg.Pool | pg.ClientBase, t: EventTable, name: string): Promise<boolean> {
  const { rows } = await db.query<{ found: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2 AND NOT tgisinternal) AS found`,
    [t.table, name],
  );
  return rows[0]!.found;
}

/** The quoted, qualified name of a relation by oid, and its kind. */
export async function relation(
  db: pg.Pool | pg.ClientBase,
  oid: string,
): Promise<{ schema: string; name: string; q: string; kind: string }> {
  const { rows } = await db.query<{ schema: string; name: string; kind: string }>(
    `SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::int8::oid`,
    [oid],
  );
  const row = rows[0]!;
  return { ...row, q: `${quoteIdentifier(row.schema)}.${quoteIdentifier(row.name)}` };
}

/** The direct partitions of a partitioned table (oids as text). */
export async function partitionsOf(db: pg.Pool | pg.ClientBase, oid: string): Promise<string[]> {
  const { rows } = await db.query<{ oid: string }>(
    `SELECT inhrelid::int8::text AS oid FROM pg_inherits WHERE inhparent = $1::int8::oid ORDER BY 1`,
    [oid],
  );
  return rows.map((r) => r.oid);
}
