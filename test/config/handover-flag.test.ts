/** `--handover-socket` (issue 14): where a second kubegate on the node finds this one; resolved by `control-plane/succession.ts`. */
import { describe, expect, test } from "bun:test";
import { parseFlags } from "../../src/config/flags.ts";

const parse = (argv: string[]) => parseFlags(argv, { hostname: "host-1" });

describe("--handover-socket", () => {
  test("defaults to auto", () => {
    const r = parse([]);
    expect(r.kind === "run" && r.config.handoverSocket).toBe("auto");
  });

  test.each(["none", "auto", "@kubegate-a", "/run/kubegate/handover.sock"])("accepts %p as given", (value) => {
    for (const argv of [["--handover-socket", value], [`--handover-socket=${value}`]]) {
      const r = parse(argv);
      expect(r.kind === "run" && r.config.handoverSocket).toBe(value);
    }
  });

  test("rejects an empty value", () => {
    for (const argv of [["--handover-socket", ""], ["--handover-socket="]]) {
      expect(parse(argv)).toEqual({ kind: "error", message: 'Invalid --handover-socket "": Expected "auto", "none", @name or a path' });
    }
  });
});
