import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderRules } from '../../../src/agent/capture/iptables.ts';
import { runSync } from '../../../src/util/exec.ts';

// The in-pod rules are loaded into a real netns: they must parse, and be removable again.
const ns = `weft-ipt-${randomBytes(3).toString('hex')}`;
const inNs = (argv: string[], input?: string) => runSync(['nsenter', `--net=/run/netns/${ns}`, ...argv], { input });

describe('in-pod iptables rules', () => {
  beforeAll(() => expect(runSync(['ip', 'netns', 'add', ns]).code).toBe(0));
  afterAll(() => runSync(['ip', 'netns', 'del', ns]));

  it('redirect outbound to 15001 and inbound to 15006, exempting the agent mark, loopback and HBONE', () => {
    const r = inNs(['iptables-restore', '--noflush'], renderRules());
    expect(r.stderr).toBe('');
    const saved = inNs(['iptables-save', '-t', 'nat']).stdout;
    expect(saved).toContain('-A WEFT_OUTPUT -m mark --mark 0x5ef7 -j RETURN');
    expect(saved).toContain('-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 15001');
    expect(saved).toContain('-A WEFT_PREROUTING -p tcp -m tcp --dport 15008 -j RETURN');
    expect(saved).toContain('-A WEFT_PREROUTING -p tcp -j REDIRECT --to-ports 15006');
    expect(saved).not.toMatch(/-A (OUTPUT|PREROUTING) .*-j WEFT_.*\n.*-A \1 .*-j WEFT_/); // installed once
  });

  it('has an IPv6 half with the same redirects (IPv6 would bypass the agent without it)', () => {
    const r = inNs(['ip6tables-restore', '--noflush'], renderRules(6));
    expect(r.stderr).toBe('');
    const saved = inNs(['ip6tables-save', '-t', 'nat']).stdout;
    expect(saved).toContain('-A WEFT_OUTPUT -m mark --mark 0x5ef7 -j RETURN');
    expect(saved).toContain('-A WEFT_OUTPUT -o lo -j RETURN');
    expect(saved).toContain('-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 15001');
    expect(saved).toContain('-A WEFT_PREROUTING -p tcp -m tcp --dport 15008 -j RETURN');
    expect(saved).toContain('-A WEFT_PREROUTING -p tcp -j REDIRECT --to-ports 15006');
  });
});
