// The VM lab on Debian 6.12 x86_64 (cloud kernel, qemu TCG): see suite.ts for what is tested.
import { vmSuite } from "./suite.ts";

await vmSuite("x86_64", "6.12");
