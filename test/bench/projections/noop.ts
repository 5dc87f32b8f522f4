import { defineProjection } from '../../../src/index.js';

/** Does nothing: measures the runner itself (read, checkpoint, commit). */
export default defineProjection({
  name: 'noop',
  async handleBatch() {},
});
