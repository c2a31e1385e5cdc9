// Admission to 15008: caps across the agent and per source, released exactly once per connection.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_HBONE_LIMITS, HboneAdmission, sourceIp, validateHboneLimits, type AdmissionTicket } from '../../src/hbone/admission.ts';

const ticket = (t: AdmissionTicket | { refused: string }) => {
  if ('refused' in t) throw new Error(t.refused);
  return t;
};

describe('HBONE admission', () => {
  it('caps pending handshakes per source, and frees the slot once the peer authenticates', () => {
    const refusals: string[] = [];
    const a = new HboneAdmission({ maxHandshakesPerSource: 2 }, (r) => refusals.push(r));
    const t1 = ticket(a.admit('10.0.0.1'));
    ticket(a.admit('10.0.0.1'));
    const third = a.admit('10.0.0.1');
    expect(third).toMatchObject({ refused: expect.stringContaining('--hbone-max-handshakes-per-source') });
    expect(refusals).toHaveLength(1);
    ticket(a.admit('10.0.0.2')); // another source is not affected
    t1.authenticated();
    ticket(a.admit('10.0.0.1'));
    expect(a.stats()).toMatchObject({ connections: 4, handshakes: 3, sources: 2, refused: { handshakesPerSource: 1 } });
  });

  it('caps connections per source and across the agent', () => {
    const a = new HboneAdmission({ maxConnections: 3, maxConnectionsPerSource: 2, maxHandshakes: 3, maxHandshakesPerSource: 2 });
    for (const t of [ticket(a.admit('a')), ticket(a.admit('a'))]) t.authenticated();
    expect(a.admit('a')).toHaveProperty('refused');
    ticket(a.admit('b'));
    expect(a.admit('c')).toMatchObject({ refused: expect.stringContaining('--hbone-max-connections)') });
    expect(a.stats().refused).toMatchObject({ connectionsPerSource: 1, connections: 1 });
  });

  it('counts every admitted connection out exactly once, whatever order its events come in', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.constantFrom('admit', 'auth', 'release', 'release-twice')), { maxLength: 200 }), (ops) => {
        const a = new HboneAdmission({ maxConnections: 8, maxConnectionsPerSource: 4, maxHandshakes: 6, maxHandshakesPerSource: 3 });
        const live: AdmissionTicket[] = [];
        for (const [src, op] of ops) {
          if (op === 'admit') {
            const t = a.admit(`10.0.0.${src}`);
            if (!('refused' in t)) live.push(t);
          } else if (live.length) {
            const t = live[src % live.length]!;
            if (op === 'auth') t.authenticated();
            else {
              t.release();
              if (op === 'release-twice') t.release();
              t.authenticated(); // late events after release change nothing
              live.splice(live.indexOf(t), 1);
            }
          }
          const s = a.stats();
          expect(s.connections).toBe(live.length);
          expect(s.connections).toBeLessThanOrEqual(8);
          expect(s.handshakes).toBeLessThanOrEqual(6);
        }
        for (const t of live) t.release();
        expect(a.stats()).toMatchObject({ connections: 0, handshakes: 0, sources: 0 });
      }),
    );
  });

  it('rejects limits that are not positive integers, naming the field', () => {
    expect(() => validateHboneLimits({ ...DEFAULT_HBONE_LIMITS, handshakeTimeoutMs: 0 })).toThrow(/handshakeTimeoutMs/);
    expect(() => validateHboneLimits({ ...DEFAULT_HBONE_LIMITS, maxConnections: 1.5 })).toThrow(/maxConnections/);
    expect(() => new HboneAdmission({ maxHandshakesPerSource: -1 })).toThrow(/maxHandshakesPerSource/);
  });

  it('lets the tighter of overlapping caps win', () => {
    const a = new HboneAdmission({ maxConnections: 2, maxHandshakesPerSource: 100 });
    ticket(a.admit('x'));
    ticket(a.admit('x'));
    expect(a.admit('x')).toMatchObject({ refused: expect.stringContaining('--hbone-max-connections)') });
  });

  it('keys sources by IP, v4-mapped addresses as v4', () => {
    expect(sourceIp('10.1.2.3:4000')).toBe('10.1.2.3');
    expect(sourceIp('[::ffff:10.1.2.3]:4000')).toBe('10.1.2.3');
    expect(sourceIp('[fd00::1]:4000')).toBe('fd00::1');
  });
});
