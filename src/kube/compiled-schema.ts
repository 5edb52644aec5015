/**
 * A fast path for valibot validation at scale: a valibot schema compiled once into specialised
 * JavaScript (one function per object, array and record, with every field read and written by
 * name) that checks and copies an object in one pass, without valibot's per-node datasets and
 * issue machinery (several times less CPU and garbage for 100k endpoints).
 *
 * It is exact on success and silent on failure: when the compiled check accepts a value, its output
 * equals `v.parse(schema, raw)` (same keys in the same order, same defaults, unknown keys dropped);
 * when it rejects one it says nothing, and the caller runs valibot itself for the verdict and the
 * message. Only the schema features objects.ts uses are compiled (object, optional and nullable with
 * constant defaults, string, number, boolean, literal, picklist, array, record, union, and the
 * integer, minValue, maxValue and minLength checks); a schema using anything else is not compiled
 * at all ({@link compileSchema} returns undefined), so a new feature in objects.ts can never be
 * skipped silently. The generated code embeds only the schema's own keys and constants (as JSON
 * literals), never input data.
 */
import type * as v from "valibot";

/** The compiled check's verdict for a value it rejects. */
const FAIL: unique symbol = Symbol("fail");

/** A schema node as valibot builds it (the fields read here). */
interface Node {
  readonly kind: string;
  readonly type: string;
  readonly pipe?: readonly Node[];
  readonly entries?: Readonly<Record<string, Node>>;
  readonly wrapped?: Node;
  readonly default?: unknown;
  readonly fallback?: unknown;
  readonly item?: Node;
  readonly key?: Node;
  readonly value?: Node;
  readonly options?: readonly unknown[];
  readonly literal?: unknown;
  readonly requirement?: unknown;
}

class Unsupported extends Error {
  override name = "Unsupported";
}

const isPlainConstant = (x: unknown): x is string | boolean | number =>
  typeof x === "string" || typeof x === "boolean" || (typeof x === "number" && Number.isFinite(x));

/** Generates the checking functions of one schema. */
class Generator {
  readonly #functions: string[] = [];
  readonly #constants: unknown[] = [];
  #vars = 0;

  /** The source of all functions, `f0` (the root) first; and the constants they read as `k[i]`. */
  program(root: Node): { source: string; constants: unknown[] } {
    const rootName = this.#function(root);
    return { source: `${this.#functions.join("\n")}\nreturn ${rootName};`, constants: this.#constants };
  }

  #var(): string {
    return `v${this.#vars++}`;
  }

  #constant(value: unknown): string {
    this.#constants.push(value);
    return `k[${this.#constants.length - 1}]`;
  }

  /** A function `fN(input)` returning the output or FAIL; its name. */
  #function(node: Node): string {
    return this.#wrap((name) => {
      const out = this.#var();
      return `function ${name}(input) {\nlet ${out};\n${this.#emit(node, "input", out)}\nreturn ${out};\n}`;
    });
  }

  /** Code that checks the value of expression `input` (a variable or constant) and assigns the output to `out`. */
  #emit(node: Node, input: string, out: string): string {
    if (node.fallback !== undefined) throw new Unsupported("fallback");
    if (node.pipe !== undefined) return this.#emitPipe(node.pipe, input, out);
    switch (node.type) {
      case "string":
        return `if (typeof ${input} !== "string") return F;\n${out} = ${input};`;
      case "number":
        return `if (typeof ${input} !== "number" || ${input} !== ${input}) return F;\n${out} = ${input};`;
      case "boolean":
        return `if (typeof ${input} !== "boolean") return F;\n${out} = ${input};`;
      case "literal":
        if (!isPlainConstant(node.literal)) throw new Unsupported("literal of another type");
        return `if (${input} !== ${JSON.stringify(node.literal)}) return F;\n${out} = ${input};`;
      case "picklist": {
        const options = node.options ?? [];
        if (!options.every(isPlainConstant)) throw new Unsupported("picklist of other types");
        const test = options.length === 0 ? "true" : options.map((o) => `${input} !== ${JSON.stringify(o)}`).join(" && ");
        return `if (${test}) return F;\n${out} = ${input};`;
      }
      case "optional":
      case "nullable": {
        const empty = node.type === "optional" ? "undefined" : "null";
        if (typeof node.default === "function") throw new Unsupported("function default");
        const wrapped = node.wrapped as Node;
        const whenEmpty =
          node.default === undefined || (node.type === "nullable" && node.default === null)
            ? `${out} = ${empty};`
            : this.#emit(wrapped, this.#constant(node.default), out);
        return `if (${input} === ${empty}) {\n${whenEmpty}\n} else {\n${this.#emit(wrapped, input, out)}\n}`;
      }
      case "object":
        return this.#call(this.#object(node), input, out);
      case "array":
        return this.#call(this.#array(node), input, out);
      case "record":
        return this.#call(this.#record(node), input, out);
      case "union":
        return this.#call(this.#union(node), input, out);
      default:
        throw new Unsupported(`schema ${node.type}`);
    }
  }

  #call(fn: string, input: string, out: string): string {
    return `${out} = ${fn}(${input});\nif (${out} === F) return F;`;
  }

  #emitPipe(pipe: readonly Node[], input: string, out: string): string {
    const [head, ...actions] = pipe;
    if (head === undefined || head.kind !== "schema") throw new Unsupported("pipe without a schema first");
    const lines = [this.#emit(head, input, out)];
    for (const action of actions) {
      if (action.kind === "metadata") continue;
      if (action.kind !== "validation") throw new Unsupported(`pipe item ${action.kind}`);
      const req = action.requirement;
      if (action.type !== "integer" && (typeof req !== "number" || !Number.isFinite(req))) throw new Unsupported(`${action.type} requirement`);
      switch (action.type) {
        case "integer":
          lines.push(`if (!Number.isInteger(${out})) return F;`);
          break;
        case "min_value":
          lines.push(`if (!(${out} >= ${req})) return F;`);
          break;
        case "max_value":
          lines.push(`if (!(${out} <= ${req})) return F;`);
          break;
        case "min_length":
          lines.push(`if (${out}.length < ${req}) return F;`);
          break;
        default:
          throw new Unsupported(`action ${action.type}`);
      }
    }
    return lines.join("\n");
  }

  /** Reserve the next function name, then build it (functions it needs get later names). */
  #wrap(build: (name: string) => string): string {
    const index = this.#functions.length;
    const name = `f${index}`;
    this.#functions.push("");
    this.#functions[index] = build(name);
    return name;
  }

  #object(node: Node): string {
    return this.#wrap((name) => {
      const lines = [`function ${name}(input) {`, `if (!input || typeof input !== "object") return F;`, `const out = {};`];
      for (const [key, schema] of Object.entries(node.entries ?? {})) {
        if (schema.type === "nullish" || schema.type === "exact_optional") throw new Unsupported(schema.type);
        const optional = schema.type === "optional";
        const hasDefault = optional && schema.default !== undefined;
        const k = JSON.stringify(key);
        const x = this.#var();
        const y = this.#var();
        lines.push(`{\nconst ${x} = input[${k}];\nlet ${y};`);
        lines.push(`if (${x} !== undefined || ${k} in input) {\n${this.#emit(schema, x, y)}\nout[${k}] = ${y};\n}`);
        // An absent key with a default: valibot checks the default as if it were the input.
        // (A piped optional runs its whole pipe on the default; a plain one, only what it wraps.)
        const withDefault = schema.pipe === undefined ? (schema.wrapped as Node) : schema;
        if (hasDefault) lines.push(`else {\n${this.#emit(withDefault, this.#constant(schema.default), y)}\nout[${k}] = ${y};\n}`);
        else if (!optional) lines.push(`else return F;`);
        lines.push(`}`);
      }
      lines.push(`return out;`, `}`);
      return lines.join("\n");
    });
  }

  #array(node: Node): string {
    return this.#wrap((name) => {
      const x = this.#var();
      const y = this.#var();
      return [
        `function ${name}(input) {`,
        `if (!Array.isArray(input)) return F;`,
        `const out = [];`,
        `for (let i = 0; i < input.length; i++) {`,
        `const ${x} = input[i];`,
        `let ${y};`,
        this.#emit(node.item as Node, x, y),
        `out.push(${y});`,
        `}`,
        `return out;`,
        `}`,
      ].join("\n");
    });
  }

  #record(node: Node): string {
    return this.#wrap((name) => {
      const kx = this.#var();
      const x = this.#var();
      const y = this.#var();
      return [
        `function ${name}(input) {`,
        `if (!input || typeof input !== "object") return F;`,
        `const out = {};`,
        `for (const key in input) {`,
        `if (!hasOwn.call(input, key) || key === "__proto__" || key === "prototype" || key === "constructor") continue;`,
        `let ${kx};`,
        this.#emit(node.key as Node, "key", kx),
        `const ${x} = input[key];`,
        `let ${y};`,
        this.#emit(node.value as Node, x, y),
        `out[${kx}] = ${y};`,
        `}`,
        `return out;`,
        `}`,
      ].join("\n");
    });
  }

  #union(node: Node): string {
    const options = (node.options as Node[]).map((option) => this.#function(option));
    return this.#wrap((name) => {
      const lines = [`function ${name}(input) {`, `let out;`];
      for (const option of options) lines.push(`out = ${option}(input);`, `if (out !== F) return out;`);
      lines.push(`return F;`, `}`);
      return lines.join("\n");
    });
  }
}

/**
 * Compile `schema` into a check that returns `v.parse(schema, raw)` for a valid value and undefined
 * for anything valibot might reject (run valibot then, for its verdict and message). Returns undefined
 * when the schema uses a feature this compiler does not know.
 *
 * @example
 * const fast = compileSchema(EndpointSlice);
 * const slice = fast?.(raw) ?? v.parse(EndpointSlice, raw);
 */
export function compileSchema<S extends v.GenericSchema>(schema: S): ((raw: unknown) => v.InferOutput<S> | undefined) | undefined {
  let program: { source: string; constants: unknown[] };
  try {
    program = new Generator().program(schema as unknown as Node);
  } catch (err) {
    if (err instanceof Unsupported) return undefined;
    throw err;
  }
  const run = new Function("F", "k", "hasOwn", program.source)(FAIL, program.constants, Object.prototype.hasOwnProperty) as (
    raw: unknown,
  ) => unknown;
  return (raw) => {
    const out = run(raw);
    return out === FAIL ? undefined : (out as v.InferOutput<S>);
  };
}
