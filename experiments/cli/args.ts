/** Minimal, strict argument parsing for the commands: unknown flags are errors that list the known ones. */
export interface FlagSpec {
  [flag: string]: { takesValue: boolean; repeatable?: boolean; description: string };
}

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string[]>;
}

export class UsageError extends Error {}

export function parseArgs(argv: string[], spec: FlagSpec): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    const s = spec[name];
    if (!s) throw new UsageError(`unknown option --${name}; known options: ${Object.keys(spec).map((k) => `--${k}`).join(', ')}`);
    let value = 'true';
    if (s.takesValue) {
      if (eq > 0) value = a.slice(eq + 1);
      else {
        const next = argv[++i];
        if (next === undefined) throw new UsageError(`--${name} needs a value: ${s.description}`);
        value = next;
      }
    }
    const list = flags.get(name) ?? [];
    if (list.length && !s.repeatable) throw new UsageError(`--${name} given twice`);
    list.push(value);
    flags.set(name, list);
  }
  return { positional, flags };
}

export function usage(command: string, synopsis: string, spec: FlagSpec): string {
  const lines = [`usage: ${command} ${synopsis}`, '', 'options:'];
  for (const [k, v] of Object.entries(spec)) lines.push(`  --${k}${v.takesValue ? ' <value>' : ''}`.padEnd(28) + v.description);
  return lines.join('\n');
}

/** An error class whose messages are written for the user (no stack trace with them). */
type ExpectedError = abstract new (...args: never[]) => Error;

/**
 * Runs a command's main and exits with its code. An error the user can act on (a UsageError or one of
 * `expected`) prints its message alone; anything else prints its message and how to get the stack trace
 * (VOLSEG_DEBUG=1). Both exit with 2.
 */
export function runCli(main: () => Promise<number>, expected: ExpectedError[] = []): void {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      if (e instanceof UsageError || expected.some((E) => e instanceof E)) console.error(`error: ${(e as Error).message}`);
      else console.error(`error: ${(e as Error).message ?? e}${process.env.VOLSEG_DEBUG ? `\n${(e as Error).stack}` : '\n(set VOLSEG_DEBUG=1 for a stack trace)'}`);
      process.exit(2);
    },
  );
}
