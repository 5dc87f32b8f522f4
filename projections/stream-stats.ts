import { defineProjection } from '../src/index.js';

/** Per-stream statistics: how many events, first and last position, last type. One upsert per event. */
export default defineProjection({
  name: 'stream_stats',

  async setup(db) {
    await db.query(`
      CREATE TABLE IF NOT EXISTS stream_stats (
        stream_name    text PRIMARY KEY,
        event_count    bigint NOT NULL,
        first_position bigint NOT NULL,
        last_position  bigint NOT NULL,
        last_type      text   NOT NULL,
        late_events    bigint NOT NULL DEFAULT 0
      )`);
  },

  async reset(db) {
    await db.query('TRUNCATE stream_stats');
  },

  async handle(event, tx) {
    await tx.query(
      `INSERT INTO stream_stats AS s (stream_name, event_count, first_position, last_position, last_type, late_events)
       VALUES ($1, 1, $2, $2, $3, $4)
       ON CONFLICT (stream_name) DO UPDATE
         SET event_count = s.event_count + 1,
             first_position = least(s.first_position, EXCLUDED.first_position),
             last_position = greatest(s.last_position, EXCLUDED.last_position),
             last_type = CASE WHEN EXCLUDED.last_position > s.last_position THEN EXCLUDED.last_type ELSE s.last_type END,
             late_events = s.late_events + EXCLUDED.late_events`,
      [event.streamName, event.globalPosition.toString(), event.type, event.late ? 1 : 0],
    );
  },
});
