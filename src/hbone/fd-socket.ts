// A connected TCP socket's file descriptor as a Node socket, for the routes that still relay in
// JavaScript or through a Socket-taking API.
import { Socket } from 'node:net';

/**
 * A Node socket on fd (which it owns from then on), paused like one a `pauseOnConnect` server
 * hands out: nothing is read before its new owner starts the relay, so no byte can be lost.
 */
export function socketFromFd(fd: number): Socket {
  // pauseOnCreate: Node's own option for accepted sockets (net.js), missing from its typings.
  return new Socket({ fd, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: true } as ConstructorParameters<typeof Socket>[0]);
}
