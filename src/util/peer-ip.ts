// The bare IP of a peer's "host:port" (IPv6 in brackets, IPv4-mapped IPv6 unmapped), as policies
// and the mesh state know it.
export const ipOf = (hostPort: string) => hostPort.replace(/^\[?([^\]]*)\]?:\d+$/, '$1').replace(/^::ffff:/, '');
