import { describe, expect, it } from 'vitest';
import { dropSummary } from '../../src/cli/versions.js';
import type { SchemaDrop } from '../../src/versions/schemas.js';

describe('dropSummary: what `drop` says it deletes (its prompt) and deleted (its report)', () => {
  const cases: Array<[string, SchemaDrop, string]> = [
    ['a first version in place: no schema of its own', { kind: 'none', schema: null }, 'its checkpoint and bookkeeping'],
    ['a schema already gone', { kind: 'none', schema: 'acct_v2' }, 'no schema acct_v2 to delete; its checkpoint and bookkeeping'],
    [
      "the runner's schema, nothing outside depending on it",
      { kind: 'ours', schema: 'acct_v2', objects: ['sequence acct_v2.entry_no', 'table acct_v2.balances'], dependents: [] },
      'schema acct_v2 and everything in it (sequence acct_v2.entry_no, table acct_v2.balances); its checkpoint and bookkeeping',
    ],
    [
      'with dependents outside (only ever dropped with --cascade)',
      { kind: 'ours', schema: 'acct_v1', objects: ['table acct_v1.balances'], dependents: ['view report'] },
      'schema acct_v1 and everything in it (table acct_v1.balances), and outside it (--cascade): view report; its checkpoint and bookkeeping',
    ],
  ];
  it.each(cases)('%s', (_, drop, said) => expect(dropSummary(drop)).toBe(said));

  it('a schema the runner did not create: kept, and said so', () => {
    expect(dropSummary({ kind: 'not-ours', schema: 'acct_v2' })).toMatch(
      /^its checkpoint and bookkeeping; schema acct_v2 stays: the runner did not create it/,
    );
  });
});
