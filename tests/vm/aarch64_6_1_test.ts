// The VM lab on Debian 6.1 aarch64 (cloud kernel, qemu TCG): see suite.ts for what is tested.
// Also: a host tool CLI in another process boots its own VM through the launcher script.
import { vmSuite } from "./suite.ts";

await vmSuite("aarch64", "6.1", { launcher: true });
