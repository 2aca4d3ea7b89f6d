// The VM lab on Debian 6.12 aarch64 (cloud kernel, qemu TCG): see suite.ts for what is tested.
import { vmSuite } from "./suite.ts";

await vmSuite("aarch64", "6.12");
