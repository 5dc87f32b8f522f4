import type pg from 'pg';
import type { Logger } from 'pino';
import { APPLICATION_NAME } from '../db/connection.js';
import type { StoreNames } from '../db/identifiers.js';
import { isProvenDead, pruneSamples, type EvidenceSnapshot, type SequenceSample } from './gap-evidence-rules.js';
import type { HighWaterState, OpenGap } from './high-water.js';
import type { GapEvidenceSource } from './high-water-tracker.js';

/** The SQL shell of the evidence rules (gap-evidence-rules.ts): what pg_stat_activity and pg_prepared_xacts say. */
class ActivityEvidence implements GapEvidenceSource {
  readonly recheckMs = 20;
  private samples: SequenceSample[] = [];

  constructor(private readonly pool: pg.Pool) {}

  recordSample(sample: SequenceSample): void {
    this.samples.push(sample);
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
                  AND a.backend_type = 'client backend'
                  AND coalesce(a.application_name, '') NOT LIKE $1
                  AND (a.xact_start IS NOT NULL OR a.state IS NULL)) AS sessions,
              (SELECT coalesce(array_agg((extract(epoch FROM p.prepared) * 1000)::float8), '{}')
                 FROM pg_prepared_xacts p WHERE p.database = current_database()) AS prepared`,
      [`${APPLICATION_NAME}:%`],
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
 * Evidence needs to see other roles' sessions: superuser or pg_read_all_stats. Without it, one clear log line and
 * the timeout alone resolves gaps.
 */
export async function createGapEvidence(pool: pg.Pool, names: StoreNames, log: Logger): Promise<ActivityEvidence | undefined> {
  const { rows } = await pool.query<{ can_see: boolean; can_sample: boolean }>(
    `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
              OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS can_see,
            has_sequence_privilege(${names.q.sequenceLiteral}, 'SELECT') AS can_sample`,
  );
  const { can_see, can_sample } = rows[0]!;
  if (!can_see || !can_sample) {
    log.warn(
      { pg_read_all_stats: can_see, sequenceSelect: can_sample },
      'gap evidence unavailable (grant pg_read_all_stats and SELECT on the events sequence to enable it): gaps are resolved by --gap-timeout only',
    );
    return undefined;
  }
  log.info('gap evidence enabled: gaps whose writer provably rolled back are declared dead at once');
  return new ActivityEvidence(pool);
}

export type { ActivityEvidence };
