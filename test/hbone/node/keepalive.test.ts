// keepAlive on real Node HTTP/2 sessions whose peers go silent once the session is closing (GOAWAY
// sent or received): Node refuses to ping a closing session, and such a session must not live forever.
import http2, { type Http2Session } from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { keepAlive } from '../../../src/hbone/node/keepalive.ts';
import { connectBlock, encodeFrame, encodeInput, F, T } from '../../fuzz/h2frames.ts';
import { until } from '../harness.ts';
import { createCa } from '../pki.ts';

const settings = encodeFrame({ type: T.SETTINGS, flags: 0, stream: 0, payload: Buffer.alloc(0) });
const settingsAck = encodeFrame({ type: T.SETTINGS, flags: F.ACK, stream: 0, payload: Buffer.alloc(0) });

describe('keepAlive', () => {
  it('destroys a server session closed with a stream open once its silent peer cannot be pinged', async () => {
    let session: Http2Session | undefined;
    const server = http2.createServer();
    server.on('session', (s) => {
      s.on('error', () => {});
      keepAlive(s, 50, 200);
      session = s;
    });
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.session?.close(); // graceful GOAWAY: the open stream may finish; the peer never answers again
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    // A peer that opens a CONNECT stream and then neither reads nor answers anything.
    const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    peer.on('error', () => {});
    try {
      const connect = { type: T.HEADERS, flags: F.END_HEADERS, stream: 1, payload: connectBlock('127.0.0.1:1') };
      peer.write(encodeInput({ preface: 'ok', pieces: 1, frames: [{ type: T.SETTINGS, flags: 0, stream: 0, payload: Buffer.alloc(0) }, connect] }));
      await until(() => session?.closed === true, 2000, 'the session to close');
      expect(session!.destroyed).toBe(false);
      await until(() => session!.destroyed, 3000, 'the unpingable session to be destroyed');
    } finally {
      peer.destroy();
      session?.destroy();
      server.close();
    }
  });

  it('destroys a client session that got a graceful GOAWAY once its silent peer cannot be pinged', async () => {
    // The peer: answers the preface, takes stream 1, says GOAWAY(NO_ERROR, last stream 1), then goes silent.
    const sockets: net.Socket[] = [];
    const peer = net.createServer((s) => {
      sockets.push(s);
      s.on('error', () => {});
      s.write(Buffer.concat([settings, settingsAck]));
      s.once('data', () => {
        const goaway = Buffer.alloc(8);
        goaway.writeUInt32BE(1, 0);
        setTimeout(() => s.write(encodeFrame({ type: T.GOAWAY, flags: 0, stream: 0, payload: goaway })), 50);
      });
    });
    await new Promise<void>((r) => peer.listen(0, '127.0.0.1', r));
    const client = http2.connect(`http://127.0.0.1:${(peer.address() as net.AddressInfo).port}`);
    client.on('error', () => {});
    try {
      await new Promise((r) => client.once('remoteSettings', r));
      const stream = client.request({ ':method': 'CONNECT', ':authority': '127.0.0.1:1' }, { endStream: false });
      stream.on('error', () => {});
      await until(() => client.closed, 2000, 'the GOAWAY to close the session');
      // Pinging starts now: the peer has answered everything so far and falls silent only from here.
      keepAlive(client, 50, 200);
      expect(client.destroyed).toBe(false);
      await until(() => client.destroyed, 3000, 'the unpingable session to be destroyed');
    } finally {
      client.destroy();
      for (const s of sockets) s.destroy();
      peer.close();
    }
  });

  it('closes the socket of a session it destroyed whose peer stopped reading and left', async () => {
    // Node closes a destroyed session's socket only once its write in progress completes.
    const ca = await createCa('weft keepalive root');
    const creds = await ca.issue('shop', 'cart');
    const peers: tls.TLSSocket[] = [];
    const peer = tls.createServer({ key: creds.key, cert: creds.certChain, ALPNProtocols: ['h2'] }, (s) => {
      peers.push(s);
      s.on('error', () => {});
      // Windows as large as HTTP/2 allows, so the client's writes back up on the socket.
      const initialWindow = Buffer.from([0, 4, 0x7f, 0xff, 0xff, 0xff]);
      const windows = Buffer.alloc(4);
      windows.writeUInt32BE(0x7fff0000, 0);
      s.write(Buffer.concat([
        encodeFrame({ type: T.SETTINGS, flags: 0, stream: 0, payload: initialWindow }),
        settingsAck,
        encodeFrame({ type: T.WINDOW_UPDATE, flags: 0, stream: 0, payload: windows }),
      ]));
      // Answers the CONNECT (:status 200, HPACK index 8) and then reads nothing more.
      s.once('data', () => setTimeout(() => {
        s.write(encodeFrame({ type: T.HEADERS, flags: F.END_HEADERS, stream: 1, payload: Buffer.from([0x88]) }));
        s.pause();
      }, 50));
    });
    await new Promise<void>((r) => peer.listen(0, '127.0.0.1', r));
    const socket = tls.connect({ port: (peer.address() as net.AddressInfo).port, host: '127.0.0.1', ALPNProtocols: ['h2'], rejectUnauthorized: false });
    socket.on('error', () => {});
    const client = http2.connect('https://127.0.0.1', { createConnection: () => socket });
    client.on('error', () => {});
    let closed = false;
    client.once('close', () => (closed = true));
    try {
      const stream = client.request({ ':method': 'CONNECT', ':authority': '127.0.0.1:1' }, { endStream: false });
      stream.on('error', () => {});
      await new Promise((r) => stream.once('response', r));
      const chunk = Buffer.alloc(1 << 20);
      // An upload the peer never reads, written as a well-behaved sender does: on 'drain'.
      let sent = 0;
      const pump = () => {
        while (sent < 64 && stream.write(chunk)) sent++;
        if (sent < 64) stream.once('drain', pump);
      };
      pump();
      await new Promise((r) => setTimeout(r, 200));
      for (const s of peers) s.destroy(); // the peer leaves; the client's write never completes
      await new Promise((r) => setTimeout(r, 500));
      keepAlive(client, 50, 200, socket);
      await until(() => client.destroyed, 2000, 'the keepalive to destroy the session');
      await until(() => closed, 3000, 'the session to close');
    } finally {
      client.destroy();
      socket.destroy();
      peer.close();
    }
  });
});
