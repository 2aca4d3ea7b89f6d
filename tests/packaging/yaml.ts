/**
 * YAML for the packaging tests: the npm `yaml` package (YAML 1.2, so `on:`
 * stays a string key), behind one module so it can be swapped in one place.
 *
 * @example
 * ```ts
 * import { parseYaml } from "./yaml.ts";
 * const wf = parseYaml("on: push\njobs: {}\n") as Record<string, unknown>;
 * console.log(Object.keys(wf)); // ["on", "jobs"]
 * ```
 * @module
 */

import { parseDocument } from "yaml";

/** Raised for a YAML file that does not parse; the message names the file and line. */
export class YamlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "YamlError";
  }
}

/**
 * Parses one YAML document strictly: any syntax error or warning (duplicate
 * keys, tabs, …) is an error naming `name` and the position.
 */
export function parseYaml(text: string, name = "<yaml>"): unknown {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length) {
    throw new YamlError(`${name}: ${problems.map((p) => p.message).join("\n")}`);
  }
  return doc.toJS({ maxAliasCount: 100 });
}
