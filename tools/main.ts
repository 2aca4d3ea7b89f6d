/**
 * `deno task tool <name> [args]`: runs the host tool `tools/<name>/<name>.ts`
 * (e.g. `deno task tool opensnoop -p 123`).
 *
 * @example
 * ```sh
 * deno task tool opensnoop --help
 * ```
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** Names of the tools: a BPF program `<name>.bpf.c` with its host program `<name>.ts`. */
export function toolNames(): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(`${ROOT}tools`)) {
    try {
      const base = `${ROOT}tools/${e.name}/${e.name}`;
      if (e.isDirectory && Deno.statSync(`${base}.ts`).isFile && Deno.statSync(`${base}.bpf.c`)) {
        out.push(e.name);
      }
    } catch { /* no host program */ }
  }
  return out.sort();
}

if (import.meta.main) {
  const [name, ...args] = Deno.args;
  const names = toolNames();
  if (!name || name === "--help" || name === "-h" || !names.includes(name)) {
    if (name && !name.startsWith("-")) console.error(`tool: no tool named ${name}`);
    console.error(`Usage: deno task tool <name> [args]   (tools: ${names.join(", ")})`);
    Deno.exit(name && !name.startsWith("-") ? 2 : 0);
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}tools/${name}/${name}.ts`, ...args],
  }).spawn();
  // Ctrl-C reaches the tool directly (same process group); wait for it to clean up.
  Deno.addSignalListener("SIGINT", () => {});
  Deno.exit((await child.status).code);
}
