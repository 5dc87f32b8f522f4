import type pg from 'pg';
import { quoteLiteral, type StoreNames } from '../db/identifiers.js';
import { executePrepared, preparedAll, prepareOn, preparedStatement, type PreparedStatement } from '../db/prepared.js';
import { buildCheckSql, buildScopeColumns, type BuildScope } from '../versions/build-slot.js';
import type { ProjectionState } from '../projection/projection.js';

/**
 * The SQL of one projection's progress: its checkpoint row (moved by compare-and-set), the given-up positions it
 * passed, and the late deliveries it claimed. The events themselves are read by the source (sources/native.ts).
 */

export interface Checkpoint {
  position: bigint;
  lateSeenId: bigint;
  state: ProjectionState;
  lastError: unknown;
}

export interface FailureRecord {
  message: string;
  position: string;
  type: string;
  at: string;
}

/**
 * The checkpoint row of `name`, created at 0 when missing. `eventTypes` (the projection's filter; undefined: every
 * type) is recorded in the row so that a waiter in another process can tell which events the projection takes
 * (src/wait/): a move it defers because it wrote nothing must not hold up a wait for an event it never takes. Only
 * the projector that runs it (`ensureCheckpoint`) records them on an existing row: the types credited are those of
 * the code that applies the events, not of another release's instance that merely started (a rolling deploy).
 */
export async function createCheckpointRow(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  name: string,
  eventTypes: readonly string[] | undefined,
  { running }: { running: boolean },
): Promise<void> {
  await db.query(
    `INSERT INTO ${names.q.checkpoints} AS c (name, event_types) VALUES ($1, $2::text[])
     ON CONFLICT (name) DO ${running ? 'UPDATE SET event_types = EXCLUDED.event_types WHERE c.event_types IS DISTINCT FROM EXCLUDED.event_types' : 'NOTHING'}`,
    [name, eventTypes ? [...eventTypes] : null],
  );
}

/** The checkpoint row of `name` as its projector loads it (createCheckpointRow, running). */
export async function ensureCheckpoint(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  name: string,
  eventTypes?: readonly string[],
): Promise<Checkpoint> {
  await createCheckpointRow(db, names, name, eventTypes, { running: true });
  const { rows } = await db.query<{ position: string; late_seen_id: string; state: ProjectionState; last_error: unknown }>(
    `SELECT position::text, late_seen_id::text, state, last_error FROM ${names.q.checkpoints} WHERE name = $1`,
    [name],
  );
  const row = rows[0]!;
  return { position: BigInt(row.position), lateSeenId: BigInt(row.late_seen_id), state: row.state, lastError: row.last_error };
}

export interface BatchContext {
  highWater: bigint;
  /** Late notices this projection has not dealt with yet. */
  pendingLate: Array<{ id: bigint; position: bigint }>;
  /** The build's role and schema (JSON), read with the build scope (BuildSlot.scopeSql); undefined without one. */
  buildScope?: string | null;
  /** The given-up ranges above the checkpoint in this snapshot (batch.ts knownGivenUp decides when they suffice). */
  givenUp: GivenUpSnapshot;
}

/**
 * Given-up ranges (dead or timed out) that end above a checkpoint, in order, as one snapshot saw them: every one that
 * starts at or below `completeTo`. A range is given up in the same transaction that moves H past it, so the snapshot
 * that read H = h holds all of them up to h; fewer are fetched when there are many (a replay from 0 passes them all).
 */
export interface GivenUpSnapshot {
  ranges: Array<[bigint, bigint]>;
  completeTo: bigint;
}

/**
 * At most this many given-up ranges ride along with BEGIN; beyond them a batch asks (givenUpRanges). They are found
 * by their end (migration 7's index on to_position, given-up ranges never overlap, so the order is the same): a scan
 * in order of their start walked every given-up gap below the checkpoint, on every wake-up, a cost that grew with
 * the history (and a prepared statement's generic plan may choose it whatever the checkpoint).
 */
const GIVEN_UP_AT_BEGIN = 32;

/**
 * The batch path's statements, prepared once per session (db/prepared.ts): its context (H, the pending late notices,
 * the given-up ranges above the checkpoint, the build's scope), its checkpoint's compare-and-set, and the build check
 * of a lazily begun batch.
 */
function batchStatements(names: StoreNames): BatchStatements {
  // Asked for on every batch: found by the names object first, by the names themselves once per object.
  const known = statementsByNames.get(names);
  if (known) return known;
  const key = `${names.q.checkpoints} ${names.q.gaps} ${names.q.highWater} ${names.q.builds}`;
  let statements = statementsByStore.get(key);
  if (!statements) {
    const begin = preparedStatement(`
      SELECT (SELECT position::text FROM ${names.q.highWater}) AS hw,
             (SELECT coalesce(array_agg(id || '-' || from_position ORDER BY id), '{}') FROM ${names.q.gaps}
               WHERE resolution = 'late' AND id > $2::bigint) AS late,
             (SELECT coalesce(array_agg(f || '-' || t ORDER BY f), '{}')
                FROM (SELECT from_position AS f, to_position AS t FROM ${names.q.gaps}
                       WHERE resolution IN ('timed_out', 'dead') AND to_position > $1::bigint
                       ORDER BY to_position LIMIT ${GIVEN_UP_AT_BEGIN + 1}) g) AS given_up,
             ${buildScopeColumns(names, '$3::text', '$4::text')}`);
    // Zero rows moved must not let the COMMIT that follows through (the handlers' writes would be kept without the
    // checkpoint: applied twice later): it raises, with a message of its own (a division by zero could as well come
    // from a handler's deferred trigger at COMMIT), and PostgreSQL runs none of the statements that follow a failed
    // one in the same query string. The ELSE branch depends on the row count, so it is never folded at plan time.
    // Names from pg_catalog are qualified: this statement may be planned again under a version's search path.
    const t = (type: string) => `pg_catalog.${type}`;
    const move = preparedStatement(`
      WITH moved AS (${checkpointUpdate(names, [`$1::${t('text')}`, `$2::${t('int8')}`, `$3::${t('int8')}`, `$4::${t('int8')}`, `$5::${t('text')}`, `$6::${t('jsonb')}`, `$7::${t('text')}`])} RETURNING 1)
      SELECT CASE WHEN pg_catalog.count(*) = 1 THEN 1
                  ELSE (pg_catalog.count(*)::${t('text')} || ' ${CHECKPOINT_MOVED}')::${t('int4')} END AS moved
        FROM moved`);
    // A lazily begun batch's check of its build (BatchTransaction): the same scope, raising when it is not the build's.
    const check = preparedStatement(buildCheckSql(names, '$1::text', '$2::text', '$3::text'));
    statements = { begin, move, check, all: [begin, move, check] };
    statementsByStore.set(key, statements);
  }
  statementsByNames.set(names, statements);
  return statements;
}
const statementsByNames = new WeakMap<StoreNames, BatchStatements>();
interface BatchStatements {
  begin: PreparedStatement;
  move: PreparedStatement;
  check: PreparedStatement;
  all: readonly PreparedStatement[];
}
const statementsByStore = new Map<string, BatchStatements>();

/**
 * Starts the batch transaction and reads its context in one round trip, one snapshot: H, the pending late notices,
 * the given-up ranges above the checkpoint `after`, and with `scope` the build's role, its row FOR SHARE and search
 * path (BuildSlot.scopeSql). Values are inlined as literals (the simple protocol takes no parameters). The failure
 * path's batches begin so (runBoundedBatch); the normal path reads its context once per wake-up for all projections
 * (readBatchContext, BatchContexts) and begins its transaction only when it has a statement to send (BatchTransaction).
 */
export async function beginBatch(
  tx: pg.ClientBase,
  names: StoreNames,
  progress: { after: bigint; lateSeenId: bigint },
  scope?: BuildScope,
): Promise<BatchContext> {
  const { begin, move } = batchStatements(names);
  const result = await executePrepared(
    tx,
    begin,
    contextArguments(progress, scope),
    // READ COMMITTED whatever the session's default (a handler's SET on a pooled connection, the database's): a page
    // read on this transaction must see what its H saw, not a snapshot older than it.
    { before: BEGIN_BATCH, alsoPrepare: [move] },
  );
  return toBatchContext(result.rows[0] as ContextRow);
}

/** How every batch transaction begins: READ COMMITTED whatever the session's default (see beginBatch). */
export const BEGIN_BATCH = 'BEGIN ISOLATION LEVEL READ COMMITTED';

/**
 * The batch context alone, outside any transaction: the same statement as beginBatch's with no build (its row is
 * checked by the batch's own BEGIN, batchBeginSql), in one statement, one snapshot. Any later batch may use
 * it: H only rises, a range is given up in the transaction that moves H past it, and late notices commit in id order,
 * so an older snapshot only knows less, never something false; the batch reads no further than its H.
 */
export async function readBatchContext(
  db: pg.ClientBase,
  names: StoreNames,
  progress: { after: bigint; lateSeenId: bigint },
): Promise<BatchContext> {
  const result = await executePrepared(db, batchStatements(names).begin, contextArguments(progress, undefined));
  return toBatchContext(result.rows[0] as ContextRow);
}

/**
 * Prepares the batch statements on a session that has not yet (once per session, outside a transaction). Undefined,
 * not a promise, when it has: asked on every batch, and a pooled session has them from its first.
 */
export function prepareBatchStatements(db: pg.ClientBase, names: StoreNames): Promise<void> | undefined {
  const { all } = batchStatements(names);
  return preparedAll(db, all) ? undefined : prepareOn(db, all);
}

/**
 * BEGIN of a lazily begun batch (BatchTransaction), and with `build` its check (buildCheckSql): one string that
 * starts with BEGIN, for a session that has the batch statements prepared (prepareBatchStatements).
 */
export function batchBeginSql(names: StoreNames, build: { checkArguments(): string[] } | undefined): string {
  return build ? `${BEGIN_BATCH}; EXECUTE ${batchStatements(names).check.name}(${build.checkArguments().join(', ')})` : BEGIN_BATCH;
}

interface ContextRow {
  hw: string;
  late: string[];
  given_up: string[];
  build_scope: string | null;
}

function contextArguments(progress: { after: bigint; lateSeenId: bigint }, scope: BuildScope | undefined): string[] {
  const text = (v: string | null | undefined) => (v === null || v === undefined ? 'NULL' : quoteLiteral(v));
  return [progress.after.toString(), progress.lateSeenId.toString(), text(scope?.slot), text(scope?.searchPath)];
}

function toBatchContext(row: ContextRow): BatchContext {
  const pair = (text: string): [bigint, bigint] => {
    const [a, b] = text.split('-');
    return [BigInt(a!), BigInt(b!)];
  };
  const highWater = BigInt(row.hw);
  const givenUp = row.given_up.map(pair);
  // One more than kept was fetched: when it is there, the list is complete only below where it starts.
  const beyond = givenUp.length > GIVEN_UP_AT_BEGIN ? givenUp.pop()! : undefined;
  return {
    highWater,
    pendingLate: row.late.map(pair).map(([id, position]) => ({ id, position })),
    buildScope: row.build_scope,
    givenUp: { ranges: givenUp, completeTo: beyond ? beyond[0] - 1n : highWater },
  };
}

/** Given-up (dead or timed-out) ranges that overlap (after, upTo], clipped to it. */
export async function givenUpRanges(tx: pg.ClientBase, names: StoreNames, after: bigint, upTo: bigint): Promise<Array<[bigint, bigint]>> {
  const { rows } = await tx.query<{ f: string; t: string }>({
    name: `pr_given_up_${names.schema}_${names.table}`,
    text: `SELECT greatest(from_position, $1 + 1)::text AS f, least(to_position, $2)::text AS t FROM ${names.q.gaps}
            WHERE resolution IN ('timed_out', 'dead') AND from_position <= $2 AND to_position > $1
            ORDER BY from_position`,
    values: [after.toString(), upTo.toString()],
  });
  return rows.map((r) => [BigInt(r.f), BigInt(r.t)]);
}

/** Records positions of given-up gaps that the projection passed without reading them (see skippedPositions). */
export async function recordSkipped(
  tx: pg.ClientBase,
  names: StoreNames,
  projection: string,
  ranges: Array<[bigint, bigint]>,
): Promise<void> {
  if (ranges.length === 0) return;
  await tx.query(
    `INSERT INTO ${names.q.skippedPositions} (projection, from_position, to_position)
     SELECT $1, f, t FROM unnest($2::bigint[], $3::bigint[]) AS r(f, t) ON CONFLICT DO NOTHING`,
    [projection, ranges.map((r) => r[0].toString()), ranges.map((r) => r[1].toString())],
  );
}

/** SQL condition: the build `slotSql` passed position `positionSql` while it was given up (recordSkipped). */
export function skippedSql(names: StoreNames, slotSql: string, positionSql: string): string {
  return `EXISTS (SELECT 1 FROM ${names.q.skippedPositions} s
                   WHERE s.projection = ${slotSql} AND s.from_position <= ${positionSql} AND s.to_position >= ${positionSql})`;
}

/** SQL condition: as skippedSql, and the event at that position has not been applied to it late yet. */
export function skippedUndeliveredSql(names: StoreNames, slotSql: string, positionSql: string): string {
  return `${skippedSql(names, slotSql, positionSql)}
          AND NOT EXISTS (SELECT 1 FROM ${names.q.lateDeliveries} d WHERE d.projection = ${slotSql} AND d.position = ${positionSql})`;
}

/**
 * Of the late positions given, those this projection must apply now: it skipped them (they were missing when it
 * passed) and has not applied them late before. Records them as applied (in the caller's transaction), so each is
 * applied exactly once, however old the notice.
 */
export async function claimLateDeliveries(
  tx: pg.ClientBase,
  names: StoreNames,
  projection: string,
  positions: bigint[],
): Promise<bigint[]> {
  if (positions.length === 0) return [];
  const { rows } = await tx.query<{ position: string }>(
    `INSERT INTO ${names.q.lateDeliveries} (projection, position)
     SELECT $1, p FROM unnest($2::bigint[]) AS p
      WHERE ${skippedSql(names, '$1', 'p')}
     ON CONFLICT DO NOTHING RETURNING position::text`,
    [projection, positions.map(String)],
  );
  return rows.map((r) => BigInt(r.position));
}

/** A checkpoint row's progress as a batch or a dead letter commits it (the whole of it: unchanged fields too). */
export interface CheckpointMove {
  position: bigint;
  lateSeenId: bigint;
  state: ProjectionState;
  lastError?: FailureRecord | null;
  owner: string;
}

/** The compare-and-set of a checkpoint: `v` gives each value's SQL (a parameter or a literal), in this order. */
function checkpointUpdate(names: StoreNames, v: [name: string, expected: string, ...CheckpointValues]): string {
  const [name, expected, position, lateSeenId, state, lastError, owner] = v;
  return `UPDATE ${names.q.checkpoints}
             SET position = ${position}, late_seen_id = ${lateSeenId}, state = ${state}, last_error = ${lastError},
                 owner = ${owner}, updated_at = pg_catalog.now()
           WHERE name = ${name} AND position = ${expected}`;
}
type CheckpointValues = [position: string, lateSeenId: string, state: string, lastError: string, owner: string];

function moveValues(next: CheckpointMove): [string, string, string, string | null, string] {
  return [
    next.position.toString(),
    next.lateSeenId.toString(),
    next.state,
    next.lastError ? JSON.stringify(next.lastError) : null,
    next.owner,
  ];
}

/**
 * Moves the checkpoint: a compare-and-set on the previous position, inside the caller's transaction. Zero rows means
 * another instance moved it (we lost ownership): the caller rolls back.
 */
export async function saveCheckpoint(
  tx: pg.ClientBase,
  names: StoreNames,
  name: string,
  expected: bigint,
  next: CheckpointMove,
): Promise<boolean> {
  const result = await tx.query({
    name: `pr_checkpoint_${names.schema}_${names.table}`,
    text: checkpointUpdate(names, ['$1', '$2', '$3', '$4', '$5', '$6', '$7']),
    values: [name, expected.toString(), ...moveValues(next)],
  });
  return result.rowCount === 1;
}

/**
 * saveCheckpoint and COMMIT in one round trip (the batch's last), through the prepared statement of batchStatements.
 * `begin`: the transaction has not begun (nothing of the batch needed a statement: a handler that sent none, no
 * skipped position, no late event): it begins in the same round trip, so such a batch costs one. Returns false when
 * no row moved (another instance moved the checkpoint): nothing was committed, the transaction is aborted and the
 * caller rolls it back.
 */
export async function commitWithCheckpoint(
  tx: pg.ClientBase,
  names: StoreNames,
  name: string,
  expected: bigint,
  next: CheckpointMove,
  begin?: string,
  notice?: string,
): Promise<boolean> {
  const values = [name, expected.toString(), ...moveValues(next)].map((v) => (v === null ? 'NULL' : quoteLiteral(v)));
  const before = [begin, notice].filter((s) => s !== undefined).join(';\n') || undefined;
  try {
    await executePrepared(tx, batchStatements(names).move, values, { before, after: 'COMMIT' });
    return true;
  } catch (error) {
    if ((error as { code?: string }).code === INVALID_TEXT_REPRESENTATION && String((error as Error).message).includes(CHECKPOINT_MOVED)) {
      return false;
    }
    throw error;
  }
}
const INVALID_TEXT_REPRESENTATION = '22P02';

/**
 * The statement that tells waiters (src/wait/) a checkpoint moved, sent in the batch's transaction before its move:
 * delivered at COMMIT, never when the move fails. Its payload is `position state slot` (waiter.ts reads it).
 */
export function appliedNotice(names: StoreNames, slot: string, move: CheckpointMove): string {
  return `SELECT pg_catalog.pg_notify(${quoteLiteral(names.appliedChannel)}, ${quoteLiteral(`${move.position} ${move.state} ${slot}`)})`;
}
/** The words of the compare-and-set's own error (see batchStatements). */
const CHECKPOINT_MOVED = 'rows moved: the checkpoint was moved by another session';

export async function setProjectionState(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  name: string,
  state: ProjectionState,
  owner: string | null,
): Promise<void> {
  await db.query(`UPDATE ${names.q.checkpoints} SET state = $2, owner = $3, updated_at = now() WHERE name = $1`, [name, state, owner]);
}
