/**
 * "Is there a route to this address?", asked of the kernel without sending anything: a UDP socket's `connect` does
 * the route lookup and fails with `ENETUNREACH` or `EHOSTUNREACH` when there is none. `--endpoint-access auto` needs
 * it on Bun, whose TCP connect reports those errors as `ECONNREFUSED` (the same as a host that refused), measured on
 * Bun 1.4.5; Deno's TCP connect reports them as they are, so there this answers "a route" without asking.
 */
const g = globalThis as { Bun?: unknown };

/**
 * The errno code of the kernel's route lookup for `address`, or undefined when it has a route.
 * @example await routeError("10.244.1.5") // "ENETUNREACH" on a machine with no route to kind's pod network
 */
export async function routeError(address: string): Promise<string | undefined> {
  if (!g.Bun) return undefined;
  try {
    const socket = await Bun.udpSocket({ connect: { hostname: address, port: 9 } });
    socket.close();
    return undefined;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" ? code : undefined;
  }
}
