import { describe, expect, it } from 'vitest';
import { fitToWidth, StatusLine } from '../../src/cli/status-line.js';
import { screenOf } from '../support/terminal.js';

/** A terminal `columns` wide that records what is written to it. */
function terminal(columns: number, isTTY = true) {
  let written = '';
  const out = { isTTY, columns, write: (text: string) => ((written += text), true) } as unknown as NodeJS.WriteStream;
  return { out, screen: () => screenOf(written), raw: () => written };
}

describe('the demo status line', () => {
  it('stays the last line of the screen, log lines above it, whole', () => {
    const t = terminal(80);
    const status = new StatusLine(t.out);
    status.show('applied 10  head 10');
    status.above('12:00:00.000 WARN  gap timed out  gap=5..6\n');
    status.show('applied 20  head 21');
    status.above('12:00:01.000 INFO  caught up\n12:00:01.001 INFO  again\n');
    status.show('applied 30  head 30');
    expect(t.screen()).toEqual([
      '12:00:00.000 WARN  gap timed out  gap=5..6',
      '12:00:01.000 INFO  caught up',
      '12:00:01.001 INFO  again',
      'applied 30  head 30',
    ]);
  });

  it('is cut to the width of the screen: a wrapped line could not be redrawn in place', () => {
    const t = terminal(12);
    const status = new StatusLine(t.out);
    status.show('applied 1000  head 1000');
    expect(t.screen()).toEqual(['applied 10…']);
    expect(fitToWidth('short', 12)).toBe('short');
    expect(fitToWidth('twelve chars', 12)).toBe('twelve cha…');
    expect(fitToWidth('any length', undefined)).toBe('any length');
  });

  it('without a terminal: plain lines in order', () => {
    const t = terminal(80, false);
    const status = new StatusLine(t.out);
    status.show('applied 1');
    status.above('{"level":40}');
    status.show('applied 2');
    expect(t.raw()).toBe('applied 1\n{"level":40}\napplied 2\n');
  });
});
