import type pg from 'pg';
import type { Logger } from 'pino';
import { APPLICATION_NAME } from '../db/connection.js';
import type { StoreNames } from '../db/identifiers.js';
import { isProvenDead, pruneSamples, type EvidenceSnapshot, type SequenceSample } from './evidence-rules.js';
import type { HighWaterState, OpenGap } from './decisions.js';
import type { GapEvidenceSource } from './tracker.js';
import { findPositionSequence } from '../sources/catalog.js';
import { eventTable } from '../sources/event-table.js';

/**
 * The runner's own sessions that never write events. The projectors' sessions ('runner') are not among them: a
 * projection handler may append events (a reactor), and its transaction must hold the gap like any writer's.
 */
export const INTERNAL_SESSIONS = ['tracker', 'housekeeping', 'listener', 'leases'] as const;

/** The SQL shell of the evidence rules (gap-evidence-rules.ts): what pg_stat_activity and pg_prepared_xacts say. */
export class ActivityEvidence implements GapEvidenceSource {
  readonly recheckMs = 20;
  private samples: SequenceSample[] = [];

  constructor(
    private readonly pool: pg.Pool,
    /** The sequence behind the positions (regclass literal), when the role may read it: sampled by observations. */
    readonly sampledSequence: string | undefined,
  ) {}

  /** Pruned on every push: a steady writer without gaps must not grow the list. */
  recordSample(sample: SequenceSample, openGaps: readonly OpenGap[]): void {
    this.samples.push(sample);
    this.samples = pruneSamples(this.samples, openGaps);
  }

  get sampleCount(): number {
    return this.samples.length;
  }

  /** The samples taken before `position` was handed out (for tests and diagnostics). */
  samplesBelow(position: bigint): SequenceSample[] {
    return this.samples.filter((s) => s.lastValue < position);
  }

  async collect(state: HighWaterState): Promise<(gap: OpenGap) => boolean> {
    const evidence = await this.read();
    this.samples = pruneSamples(this.samples, state.openGaps);
    const samples = this.samples;
    return (gap) => isProvenDead(gap, evidence, samples);
  }

  private async read(): Promise<EvidenceSnapshot> {
    const { rows } = await this.pool.query<{ taken_at: number; sessions: string[]; prepared: number[] }>(
      `SELECT (extract(epoch FROM statement_timestamp()) * 1000)::float8 AS taken_at,
              (SELECT coalesce(array_agg(
                        coalesce((extract(epoch FROM a.xact_start) * 1000)::text, '') || '|' ||
                        coalesce(a.state, '') || '|' ||
                        coalesce((extract(epoch FROM a.state_change) * 1000)::text, '')), '{}')
                 FROM pg_stat_activity a
                WHERE a.datname = current_database()
                  AND a.pid <> pg_backend_pid()
                  -- Every backend that can run SQL counts (client backends, background workers such as pg_cron's or
                  -- logical replication's apply); autovacuum never writes rows.
                  AND a.backend_type NOT IN ('autovacuum worker', 'autovacuum launcher')
                  AND coalesce(a.application_name, '') <> ALL ($1::text[])
                  -- Outside a transaction a session holds no position, unless we cannot tell (hidden or disabled). A
                  -- session with an xid is in a transaction even when xact_start is missing (track_activities was
                  -- off when it began): it holds the gap (the rules treat an unknown start as "could be X").
                  AND (a.xact_start IS NOT NULL OR a.state IS NULL OR a.state = 'disabled'
                       OR a.backend_xid IS NOT NULL OR a.state LIKE 'idle in transaction%')) AS sessions,
              (SELECT coalesce(array_agg((extract(epoch FROM p.prepared) * 1000)::float8), '{}')
                 FROM pg_prepared_xacts p WHERE p.database = current_database()) AS prepared`,
      [INTERNAL_SESSIONS.map((role) => `${APPLICATION_NAME}:${role}`)],
    );
    const row = rows[0]!;
    const num = (text: string | undefined) => (text ? Number(text) : null);
    return {
      takenAt: row.taken_at,
      sessions: row.sessions.map((text) => {
        const [xactStart, state, stateChange] = text.split('|');
        return { xactStart: num(xactStart), state: state || null, stateChange: num(stateChange) };
      }),
      preparedAt: row.prepared.map(Number),
    };
  }
}

/**
 * Evidence reasons from the order in which positions are handed out, so it needs the sequence behind the source's
 * position column (found in the catalog: owned by the column, an identity, or its nextval default) handing values
 * out one at a time (CACHE 1). With no sequence found, or a per-session cache, evidence is off, said in one log line,
 * and --gap-timeout resolves gaps.
 * It also needs to see other roles' sessions: superuser or pg_read_all_stats. Without it, one clear log line and
 * the timeout alone resolves gaps. Reading the sequence (SELECT or USAGE) lets it rule out idle sessions; without
 * that privilege evidence still works, more cautiously, and the tracker never touches the sequence (H keeps moving).
 */
export async function createGapEvidence(pool: pg.Pool, names: StoreNames, log: Logger): Promise<ActivityEvidence | undefined> {
  const t = eventTable(names);
  const sequence = await findPositionSequence(pool, t);
  if (!sequence) {
    log.warn(
      { table: t.table, column: t.columns.position.name },
      `gap evidence off: no sequence found behind ${t.table} (${t.columns.position.name}) (not serial, identity, OWNED BY or a nextval() default), so the order in which positions are handed out is unknown: gaps are resolved by --gap-timeout only`,
    );
    return undefined;
  }
  if (sequence.cache > 1n) {
    log.warn(
      { sequence: sequence.name, cache: sequence.cache.toString() },
      `gap evidence off: the sequence ${sequence.name} has CACHE ${sequence.cache} (each session takes a block, so positions are not handed out in order): gaps are resolved by --gap-timeout only; ALTER SEQUENCE ${sequence.name} CACHE 1 enables it`,
    );
    return undefined;
  }
  const { rows } = await pool.query<{ can_see: boolean; can_sample: boolean }>(
    `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
              OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS can_see,
            has_sequence_privilege(${sequence.literal}, 'SELECT')
              OR has_sequence_privilege(${sequence.literal}, 'USAGE') AS can_sample`,
  );
  const { can_see, can_sample } = rows[0]!;
  if (!can_sample) {
    log.warn(
      { sequence: sequence.name },
      `no SELECT or USAGE on the events sequence (GRANT SELECT ON SEQUENCE ${sequence.name} TO <runner role>): the runner works without it, but gap evidence cannot rule out sessions idle in a transaction, so gaps next to one wait for --gap-timeout`,
    );
  }
  if (!can_see) {
    log.warn(
      { pg_read_all_stats: can_see },
      'gap evidence unavailable (grant pg_read_all_stats to enable it): gaps are resolved by --gap-timeout only',
    );
    return undefined;
  }
  log.info('gap evidence enabled: gaps whose writer provably rolled back are declared dead at once');
  return new ActivityEvidence(pool, can_sample ? sequence.literal : undefined);
}
