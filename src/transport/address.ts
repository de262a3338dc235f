// host:port parsing for `--master` lists (IPv6 in brackets: [::1]:50051).

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(text: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2];
  if (!match || host === undefined || port < 1 || port > 65535) {
    throw new RangeError(`invalid address "${text}" (expected HOST:PORT)`);
  }
  return { host, port };
}

/** `a:1,b:2` → two addresses, in order. */
export function parseAddressList(text: string): HostPort[] {
  const parts = text.split(',').map((part) => part.trim()).filter((part) => part !== '');
  if (parts.length === 0) throw new RangeError('no master address given (expected HOST:PORT[,HOST:PORT…])');
  return parts.map(parseHostPort);
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
