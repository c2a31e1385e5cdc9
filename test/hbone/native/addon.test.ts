// The relay addon's settings (src/hbone/native/addon.ts → native/relay/addon.cc): the relay keeps no
// HTTP/2 or keepalive numbers, nor TLS cipher suites, of its own, so a session opened without one of
// them, or with one HTTP/2 does not allow, is refused at the call with an error naming the field;
// relaySettings (and init, for the ciphers) supplies all.
import { fstatSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relayAddon, relaySettings, type RelaySettings } from '../../../src/hbone/native/addon.ts';
import { dialSockets, until } from '../harness.ts';
import { createCa } from '../pki.ts';

let ctx: number;
const full = relaySettings({ pingIntervalMs: 10_000, pingTimeoutMs: 20_000, timeoutMs: 5_000 });

beforeAll(async () => {
  const creds = await (await createCa()).issue('shop', 'cart');
  ctx = relayAddon().context(creds.key, creds.certChain, creds.root, true);
});
afterAll(() => relayAddon().freeContext(ctx));

/** The fd is closed (a number the relay was handed, and closed on some path). */
const closed = (fd: number) => {
  try {
    fstatSync(fd);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EBADF';
  }
};

// Settings are checked before the file descriptor: -1 fails on the descriptor once they pass, and
// no session is opened either way.
const serve = (settings: unknown) => () => relayAddon().serve(-1, ctx, 'cluster.local', settings as RelaySettings);
const client = (settings: unknown) => () => relayAddon().client(-1, ctx, 'spiffe://cluster.local/ns/shop/sa/cart', settings as RelaySettings);

describe('relay settings', () => {
  it('accepts what relaySettings gives, on both sides', () => {
    expect(serve(full)).toThrow(/fd must be a file descriptor/);
    expect(client(full)).toThrow(/fd must be a file descriptor/);
  });

  it('refuses a session without settings', () => {
    expect(serve(undefined)).toThrow(/settings must be an object/);
  });

  it.each(Object.keys(full))('refuses settings without %s', (key) => {
    const partial: Record<string, unknown> = { ...full };
    delete partial[key];
    expect(serve(partial)).toThrow(new RegExp(`settings\\.${key} must be`));
    expect(client(partial)).toThrow(new RegExp(`settings\\.${key} must be`));
  });

  it.each<[keyof RelaySettings, unknown]>([
    ['streamWindow', 2 ** 31], // past SETTINGS_INITIAL_WINDOW_SIZE's maximum
    ['connectionWindow', -1],
    ['maxFrameSize', 16_383], // below SETTINGS_MAX_FRAME_SIZE's minimum
    ['maxFrameSize', 2 ** 24],
    ['maxStreams', 1.5],
    ['maxHeaderListSize', '16384'],
    ['pingIntervalMs', Number.NaN],
    ['pingTimeoutMs', Number.POSITIVE_INFINITY],
    ['connectTimeoutMs', -5],
  ])('refuses %s = %s', (key, value) => {
    expect(serve({ ...full, [key]: value })).toThrow(new RegExp(`settings\\.${key} must be`));
  });
});

describe('relay init', () => {
  // Checked before anything changes: the dispatcher the other tests rely on stays.
  it('refuses to start without the TLS cipher suites', () => {
    const dispatch = () => {};
    expect(() => relayAddon().init(dispatch, undefined as never)).toThrow(/tls must be an object/);
    expect(() => relayAddon().init(dispatch, {} as never)).toThrow(/tls\.ciphers must be a string/);
  });
});

describe('respondDial', () => {
  // The fd is the relay's from the call on: a call it refuses closes it too, so a caller that
  // handed it over leaks nothing whatever it passed.
  const sockets = dialSockets();
  afterAll(() => sockets.close());

  it.each<[string, unknown[], RegExp]>([
    ['an address that is no IP literal', ['cart.shop.svc', 80, 1000], /respondDial address must be an IP literal, not cart\.shop\.svc/],
    ['an IPv6 zone', ['fe80::1%eth0', 80, 1000], /respondDial address must be an IP literal/],
    ['port 0', ['127.0.0.1', 0, 1000], /respondDial port must be a whole number from 1 to 65535, not 0/],
    ['a port above 65535', ['127.0.0.1', 65536, 1000], /respondDial port must be/],
    ['no timeout', ['127.0.0.1', 80, undefined], /respondDial timeoutMs must be a number of milliseconds/],
    ['a negative timeout', ['127.0.0.1', 80, -1], /respondDial timeoutMs must be/],
  ])('refuses %s, and closes the fd', (_name, [address, port, timeout], error) => {
    const fd = sockets.take(4);
    expect(() => relayAddon().respondDial(1, 1, fd, address as string, port as number, timeout as number)).toThrow(error);
    expect(closed(fd)).toBe(true);
  });

  it('closes the fd of a dial for a session that does not exist', async () => {
    const fd = sockets.take(4);
    relayAddon().respondDial(0xfffffff0, 1, fd, '127.0.0.1', 80, 1000);
    await until(() => closed(fd), 5000, 'the relay thread to close the fd');
  });
});

// Reused decisions (native/relay/express.cc): the sockets handed over are the relay's from the call
// on, closed on every path a bad argument included, and a grant names a literal address.
describe('reused decisions', () => {
  const sockets = dialSockets();
  afterAll(() => sockets.close());

  it.each([
    ['a family that is neither 4 nor 6', [1, 5], /expressSupply family must be 4 or 6/],
    ['no pod number', [undefined, 4], /expressSupply pod must be a whole number/],
  ])('refuses a supply with %s, and closes its fds', (_name, [pod, family], error) => {
    const fds = [sockets.take(4), sockets.take(4)];
    expect(() => relayAddon().expressSupply(pod as number, family as 4, fds)).toThrow(error);
    for (const fd of fds) expect(closed(fd)).toBe(true);
  });

  it('closes a supply for a pod that does not exist, and what a released pod held', async () => {
    const stray = sockets.take(4);
    relayAddon().expressSupply(0xfffffff0, 4, [stray]);
    await until(() => closed(stray), 5000, 'the relay thread to close the stray fd');
    const pod = relayAddon().expressPod(10, 1000, 1);
    const held = [sockets.take(4), sockets.take(6)];
    relayAddon().expressSupply(pod, 4, [held[0]!]);
    relayAddon().expressSupply(pod, 6, [held[1]!]);
    await until(() => relayAddon().stats().expressFds >= 2, 5000, 'the supply to be counted');
    relayAddon().expressRelease(pod);
    await until(() => held.every(closed), 5000, 'the relay thread to close the pod\'s fds');
    expect(relayAddon().stats().expressFds).toBe(0);
  });

  it.each([
    ['a host name', ['cart.shop', 80], /grant address must be an IP literal, not cart\.shop/],
    ['port 0', ['127.0.0.1', 0], /grant port must be a whole number from 1 to 65535/],
  ])('refuses a grant with %s', (_name, [address, port], error) => {
    expect(() => relayAddon().grant(1, '127.0.0.1:80', 0, 1, address as string, port as number)).toThrow(error);
  });

  it('refuses a pod without a dial cap', () => {
    expect(() => relayAddon().expressPod(0, 1000, 1)).toThrow(/expressPod maxDials must be a whole number from 1/);
  });
});
