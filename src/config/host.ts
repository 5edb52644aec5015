/** The host's own interface addresses (node:os works on Bun and Deno). */
import { networkInterfaces } from "node:os";

/** Every IPv4/IPv6 address of this host's interfaces (link-local IPv6 excluded: it needs a zone to bind). */
export function hostAddresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === "IPv6" && a.address.toLowerCase().startsWith("fe80:")) continue;
      out.add(a.address);
    }
  }
  return [...out];
}
