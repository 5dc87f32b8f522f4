import { defineProjection } from '../../../src/index.js';

/** Records when each benchmark event reached the read model (server clock), for commit-to-read-model latency. */
export default defineProjection({
  name: 'latency',
  eventTypes: ['Ping'],
  async setup(db) {
    await db.query('CREATE TABLE IF NOT EXISTS bench_latency (position bigint PRIMARY KEY, applied_at timestamptz NOT NULL)');
  },
  async reset(db) {
    await db.query('TRUNCATE bench_latency');
  },
  async handleBatch(events, tx) {
    await tx.query(
      'INSERT INTO bench_latency (position, applied_at) SELECT unnest($1::bigint[]), clock_timestamp() ON CONFLICT DO NOTHING',
      [events.map((e) => e.globalPosition.toString())],
    );
  },
});
