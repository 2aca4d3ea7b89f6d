/**
 * Assertions for tests. One module so the implementation can be swapped in
 * one place (`@std/assert` where JSR is reachable); today `node:assert/strict`.
 *
 * @example
 * ```ts
 * import assert from "./assert.ts";
 * assert.equal(1 + 1, 2);
 * ```
 * @module
 */

import assert from "node:assert/strict";
export default assert;
