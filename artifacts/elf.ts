/**
 * A small, dependency-free reader for ELF64 little-endian files: the file
 * header, section and program headers, section contents, symbol tables
 * (`.symtab`, `.dynsym`) and relocation sections (`SHT_REL`, `SHT_RELA`).
 *
 * Every read is bounds-checked: truncated or corrupted input raises an
 * {@linkcode ElfError} with a message naming the field and offset, never a
 * `RangeError` from a `DataView` or an unbounded loop. All counts are
 * validated against the file size before anything is allocated.
 *
 * Value conventions: file offsets, sizes, counts and indices are `number`
 * (they are checked to be below 2^53); address-valued fields (`entry`,
 * section `addr`, segment `vaddr`/`paddr`, symbol `value`, relocation
 * `offset` and `addend`) are `bigint`, so kernel addresses survive intact.
 *
 * @example
 * ```ts
 * import { ElfFile } from "./elf.ts";
 * const elf = ElfFile.open("/bin/true");
 * console.log(elf.header.type, elf.section(".text")?.size);
 * ```
 * @module
 */

/**
 * Raised for anything that is not a well-formed ELF64 little-endian file:
 * bad magic, unsupported class or byte order, truncation and corrupted
 * header fields.
 *
 * @example
 * ```ts
 * import { ElfError, ElfFile } from "./elf.ts";
 * try {
 *   new ElfFile(new Uint8Array(4));
 * } catch (e) {
 *   console.log(e instanceof ElfError); // true
 * }
 * ```
 */
export class ElfError extends Error {
  /** Creates an error; `source` (a path or `<memory>`) prefixes the message. */
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = "ElfError";
  }
}

/**
 * Section header types (`sh_type`) the reader knows by name.
 *
 * @example
 * ```ts
 * import { ElfSectionType } from "./elf.ts";
 * console.log(ElfSectionType.RELA); // 4
 * ```
 */
export const ElfSectionType = {
  NULL: 0,
  PROGBITS: 1,
  SYMTAB: 2,
  STRTAB: 3,
  RELA: 4,
  HASH: 5,
  DYNAMIC: 6,
  NOTE: 7,
  NOBITS: 8,
  REL: 9,
  DYNSYM: 11,
  SYMTAB_SHNDX: 18,
} as const;

/**
 * Section header flag bits (`sh_flags`).
 *
 * @example
 * ```ts
 * import { ElfSectionFlag } from "./elf.ts";
 * const isCode = (flags: number) => (flags & ElfSectionFlag.EXECINSTR) !== 0;
 * ```
 */
export const ElfSectionFlag = {
  WRITE: 0x1,
  ALLOC: 0x2,
  EXECINSTR: 0x4,
} as const;

/**
 * Program header types (`p_type`).
 *
 * @example
 * ```ts
 * import { ElfFile, ElfSegmentType } from "./elf.ts";
 * const loads = ElfFile.open("/bin/true").programHeaders
 *   .filter((p) => p.type === ElfSegmentType.LOAD);
 * ```
 */
export const ElfSegmentType = {
  NULL: 0,
  LOAD: 1,
  DYNAMIC: 2,
  INTERP: 3,
  NOTE: 4,
  PHDR: 6,
  TLS: 7,
  GNU_EH_FRAME: 0x6474e550,
  GNU_STACK: 0x6474e551,
  GNU_RELRO: 0x6474e552,
} as const;

/**
 * Program header permission bits (`p_flags`).
 *
 * @example
 * ```ts
 * import { ElfSegmentFlag } from "./elf.ts";
 * const executable = (flags: number) => (flags & ElfSegmentFlag.X) !== 0;
 * ```
 */
export const ElfSegmentFlag = { X: 0x1, W: 0x2, R: 0x4 } as const;

/**
 * Symbol types (low nibble of `st_info`).
 *
 * @example
 * ```ts
 * import { ElfSymbolType } from "./elf.ts";
 * console.log(ElfSymbolType.FUNC); // 2
 * ```
 */
export const ElfSymbolType = {
  NOTYPE: 0,
  OBJECT: 1,
  FUNC: 2,
  SECTION: 3,
  FILE: 4,
  COMMON: 5,
  TLS: 6,
  GNU_IFUNC: 10,
} as const;

/**
 * Symbol bindings (high nibble of `st_info`).
 *
 * @example
 * ```ts
 * import { ElfSymbolBinding } from "./elf.ts";
 * console.log(ElfSymbolBinding.WEAK); // 2
 * ```
 */
export const ElfSymbolBinding = { LOCAL: 0, GLOBAL: 1, WEAK: 2, GNU_UNIQUE: 10 } as const;

/**
 * Special section indices that may appear in a symbol's `st_shndx`.
 *
 * @example
 * ```ts
 * import { ElfSectionIndex } from "./elf.ts";
 * const defined = (shndx: number) => shndx !== ElfSectionIndex.UNDEF;
 * ```
 */
export const ElfSectionIndex = {
  UNDEF: 0,
  LORESERVE: 0xff00,
  ABS: 0xfff1,
  COMMON: 0xfff2,
  XINDEX: 0xffff,
} as const;

/**
 * The ELF file header (`Elf64_Ehdr`) with the extended numbering
 * (`e_shnum == 0`, `SHN_XINDEX`, `PN_XNUM`) already resolved.
 *
 * @example
 * ```ts
 * import { ElfFile, type ElfHeader } from "./elf.ts";
 * const h: ElfHeader = ElfFile.open("/bin/true").header;
 * console.log(h.machine); // 62 on x86_64
 * ```
 */
export interface ElfHeader {
  /** `EI_OSABI`. */
  readonly osabi: number;
  /** `e_type`: 1 REL, 2 EXEC, 3 DYN, 4 CORE. */
  readonly type: number;
  /** `e_machine`: 62 x86_64, 183 aarch64, 247 BPF. */
  readonly machine: number;
  readonly version: number;
  readonly entry: bigint;
  readonly phoff: number;
  readonly shoff: number;
  readonly flags: number;
  readonly ehsize: number;
  readonly phentsize: number;
  readonly phnum: number;
  readonly shentsize: number;
  readonly shnum: number;
  readonly shstrndx: number;
}

/**
 * One section header (`Elf64_Shdr`) plus its resolved name and index.
 *
 * @example
 * ```ts
 * import { ElfFile, type ElfSection } from "./elf.ts";
 * const text: ElfSection | undefined = ElfFile.open("/bin/true").section(".text");
 * ```
 */
export interface ElfSection {
  readonly index: number;
  readonly name: string;
  readonly type: number;
  readonly flags: number;
  readonly addr: bigint;
  readonly offset: number;
  readonly size: number;
  readonly link: number;
  readonly info: number;
  readonly addralign: number;
  readonly entsize: number;
}

/**
 * One program header (`Elf64_Phdr`).
 *
 * @example
 * ```ts
 * import { ElfFile, type ElfProgramHeader } from "./elf.ts";
 * const [first]: readonly ElfProgramHeader[] = ElfFile.open("/bin/true").programHeaders;
 * ```
 */
export interface ElfProgramHeader {
  readonly index: number;
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly vaddr: bigint;
  readonly paddr: bigint;
  readonly filesz: number;
  readonly memsz: number;
  readonly align: number;
}

/**
 * One symbol table entry (`Elf64_Sym`); `section` is the name of the section
 * `shndx` refers to, or `null` for undefined/absolute/common symbols.
 *
 * @example
 * ```ts
 * import { ElfFile, type ElfSymbol } from "./elf.ts";
 * const syms: ElfSymbol[] = ElfFile.open("/bin/true").symbols(".dynsym");
 * ```
 */
export interface ElfSymbol {
  /** Position in its table, so `symbols()[rel.symbol]` works for relocations. */
  readonly index: number;
  readonly name: string;
  readonly value: bigint;
  readonly size: number;
  readonly type: number;
  readonly bind: number;
  /** `st_other & 3`: 0 default, 1 internal, 2 hidden, 3 protected. */
  readonly visibility: number;
  readonly shndx: number;
  readonly section: string | null;
}

/**
 * One relocation entry (`Elf64_Rel` or `Elf64_Rela`; `addend` is `0n` for
 * `SHT_REL`). `symbol` indexes the table named by the section's `link`.
 *
 * @example
 * ```ts
 * import { ElfFile, type ElfRelocation } from "./elf.ts";
 * const elf = ElfFile.open("/bin/true");
 * const rela = elf.section(".rela.dyn");
 * const rels: ElfRelocation[] = rela ? elf.relocations(rela) : [];
 * ```
 */
export interface ElfRelocation {
  readonly offset: bigint;
  readonly symbol: number;
  readonly type: number;
  readonly addend: bigint;
}

const EHDR_SIZE = 64;
const SHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SYM_SIZE = 24;
const REL_SIZE = 16;
const RELA_SIZE = 24;
const TWO_32 = 0x1_0000_0000;
const MAX_HI = 0x1f_ffff; // high word of the largest safe integer
const PN_XNUM = 0xffff;

/**
 * UTF-8 to string without `TextDecoder` (not in this project's type libs);
 * invalid sequences fall back to one character per byte.
 */
function decodeUtf8(bytes: Uint8Array): string {
  let escaped = "";
  for (const b of bytes) escaped += (b < 16 ? "%0" : "%") + b.toString(16);
  try {
    return decodeURIComponent(escaped);
  } catch {
    return latin1(bytes);
  }
}

function latin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096) as unknown as number[]);
  }
  return out;
}

/**
 * A parsed ELF64 little-endian image. Headers are parsed (and validated) by
 * the constructor; symbol tables and relocations are decoded on request, and
 * symbol tables are cached on the instance.
 *
 * @example
 * ```ts
 * import { ElfFile, ElfSymbolType } from "./elf.ts";
 * const libc = ElfFile.open("/lib/x86_64-linux-gnu/libc.so.6");
 * const getpid = libc.symbols(".dynsym")
 *   .find((s) => s.name === "getpid" && s.type === ElfSymbolType.FUNC);
 * console.log(getpid?.value);
 * ```
 */
export class ElfFile {
  #bytes: Uint8Array;
  #view: DataView;
  #source: string;
  #header: ElfHeader;
  #sections: readonly ElfSection[];
  #segments: readonly ElfProgramHeader[];
  #symbolCache = new Map<number, ElfSymbol[]>();

  /**
   * Parses the headers of an in-memory ELF image. `source` only labels error
   * messages (use the file path).
   */
  constructor(bytes: Uint8Array, source = "<memory>") {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#source = source;
    this.#header = this.#parseHeader();
    this.#sections = this.#parseSections();
    this.#segments = this.#parseSegments();
  }

  /**
   * Reads and parses a file. I/O failures are rethrown as {@linkcode ElfError}
   * with the original error as `cause`.
   *
   * @example
   * ```ts
   * import { ElfFile } from "./elf.ts";
   * const elf = ElfFile.open("/bin/true");
   * ```
   */
  static open(path: string): ElfFile {
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(path);
    } catch (e) {
      const err = new ElfError(
        path,
        `cannot read the file (${e instanceof Error ? e.message : e}); check that it exists ` +
          "and that the runtime may read it",
      );
      err.cause = e;
      throw err;
    }
    return new ElfFile(bytes, path);
  }

  /** The raw image. */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /** The label used in error messages (the path for {@linkcode ElfFile.open}). */
  get source(): string {
    return this.#source;
  }

  /** The file header. */
  get header(): ElfHeader {
    return this.#header;
  }

  /** All section headers, in file order (index 0 is the null section). */
  get sections(): readonly ElfSection[] {
    return this.#sections;
  }

  /** All program headers, in file order. */
  get programHeaders(): readonly ElfProgramHeader[] {
    return this.#segments;
  }

  /** The first section called `name`, if any. */
  section(name: string): ElfSection | undefined {
    return this.#sections.find((s) => s.name === name);
  }

  /** The section at `index`, if it exists. */
  sectionAt(index: number): ElfSection | undefined {
    return Number.isInteger(index) ? this.#sections[index] : undefined;
  }

  /** All sections of type `type` (see {@linkcode ElfSectionType}). */
  sectionsOfType(type: number): ElfSection[] {
    return this.#sections.filter((s) => s.type === type);
  }

  /**
   * A section's contents as a view into the image (no copy). `SHT_NOBITS`
   * sections (e.g. `.bss`) occupy no file space and give an empty array; use
   * their `size` for the in-memory size. Throws {@linkcode ElfError} when the
   * section does not exist or extends past the end of the file.
   */
  sectionData(section: ElfSection | string | number): Uint8Array {
    const s = this.#resolveSection(section);
    if (s.type === ElfSectionType.NOBITS || s.type === ElfSectionType.NULL) {
      return this.#bytes.subarray(0, 0);
    }
    this.#need(s.offset, s.size, `the contents of section ${this.#label(s)}`);
    return this.#bytes.subarray(s.offset, s.offset + s.size);
  }

  /**
   * A segment's file contents (`p_filesz` bytes at `p_offset`); throws
   * {@linkcode ElfError} when that range is outside the file.
   */
  segmentData(segment: ElfProgramHeader): Uint8Array {
    this.#need(segment.offset, segment.filesz, `the contents of program header ${segment.index}`);
    return this.#bytes.subarray(segment.offset, segment.offset + segment.filesz);
  }

  /**
   * The NUL-terminated string at `offset` inside a string table section.
   * Throws {@linkcode ElfError} if the offset is outside the table or the
   * string is not terminated inside it.
   */
  stringAt(table: ElfSection | string | number, offset: number): string {
    const s = this.#resolveSection(table);
    this.#need(s.offset, s.size, `string table ${this.#label(s)}`);
    return this.#cstring(s, offset, `string at offset ${offset} of ${this.#label(s)}`);
  }

  /**
   * Decodes a symbol table. `table` is a section, a section index, or a
   * section name (default `.symtab`); a missing named table gives `[]`.
   * Entry 0 (the null symbol) is included so that indices match relocation
   * symbol numbers. Results are cached; treat them as read-only.
   */
  symbols(table: ElfSection | string | number = ".symtab"): ElfSymbol[] {
    if (typeof table === "string" && this.section(table) === undefined) return [];
    const s = this.#resolveSection(table);
    const cached = this.#symbolCache.get(s.index);
    if (cached) return cached;
    const syms = this.#parseSymbols(s);
    this.#symbolCache.set(s.index, syms);
    return syms;
  }

  /**
   * Decodes a `SHT_REL` or `SHT_RELA` section. The relocated section is
   * `sectionAt(rel.info)` and the symbol table is `sectionAt(rel.link)`.
   */
  relocations(section: ElfSection | string | number): ElfRelocation[] {
    const s = this.#resolveSection(section);
    const isRela = s.type === ElfSectionType.RELA;
    if (!isRela && s.type !== ElfSectionType.REL) {
      throw this.#error(
        `section ${this.#label(s)} has type ${s.type}, not SHT_REL (9) or SHT_RELA (4); ` +
          "pass a relocation section",
      );
    }
    const min = isRela ? RELA_SIZE : REL_SIZE;
    const stride = this.#stride(s, min);
    const count = Math.floor(s.size / stride);
    this.#need(s.offset, count * stride, `relocation section ${this.#label(s)}`);
    const out: ElfRelocation[] = new Array(count);
    const v = this.#view;
    for (let i = 0; i < count; i++) {
      const o = s.offset + i * stride;
      out[i] = {
        offset: v.getBigUint64(o, true),
        type: v.getUint32(o + 8, true),
        symbol: v.getUint32(o + 12, true),
        addend: isRela ? v.getBigInt64(o + 16, true) : 0n,
      };
    }
    return out;
  }

  /**
   * Translates a virtual address to a file offset through the `PT_LOAD`
   * segment whose file-backed part contains it; `null` if none does.
   */
  fileOffsetOf(vaddr: bigint): number | null {
    for (const p of this.#segments) {
      if (p.type !== ElfSegmentType.LOAD) continue;
      if (vaddr >= p.vaddr && vaddr < p.vaddr + BigInt(p.filesz)) {
        return p.offset + Number(vaddr - p.vaddr);
      }
    }
    return null;
  }

  /**
   * Translates a file offset to a virtual address through the `PT_LOAD`
   * segment whose file range contains it; `null` if none does.
   */
  vaddrOf(fileOffset: number): bigint | null {
    for (const p of this.#segments) {
      if (p.type !== ElfSegmentType.LOAD) continue;
      if (fileOffset >= p.offset && fileOffset < p.offset + p.filesz) {
        return p.vaddr + BigInt(fileOffset - p.offset);
      }
    }
    return null;
  }

  // ---- parsing -----------------------------------------------------------

  #parseHeader(): ElfHeader {
    const b = this.#bytes;
    if (b.length < 16) {
      throw this.#error(
        `truncated ELF: the file has ${b.length} bytes but the identification header needs 16`,
      );
    }
    if (b[0] !== 0x7f || b[1] !== 0x45 || b[2] !== 0x4c || b[3] !== 0x46) {
      throw this.#error(
        "not an ELF file (missing \\x7fELF magic); pass an ELF executable, " +
          "shared library or object file",
      );
    }
    if (b[4] !== 2 || b[5] !== 1) {
      const cls = b[4] === 1 ? "32-bit" : b[4] === 2 ? "64-bit" : `class ${b[4]}`;
      const end = b[5] === 1
        ? "little-endian"
        : b[5] === 2
        ? "big-endian"
        : `data encoding ${b[5]}`;
      throw this.#error(
        `unsupported ELF class/endianness (${cls}, ${end}); only 64-bit little-endian ELF ` +
          "files are supported",
      );
    }
    this.#need(0, EHDR_SIZE, "the ELF64 file header");
    const v = this.#view;
    let shnum = v.getUint16(60, true);
    let shstrndx = v.getUint16(62, true);
    let phnum = v.getUint16(56, true);
    const shoff = this.#u64n(40, "e_shoff");
    const shentsize = v.getUint16(58, true);
    if (shoff !== 0 && (shnum === 0 || shstrndx === ElfSectionIndex.XINDEX || phnum === PN_XNUM)) {
      // Extended numbering: the real values live in section header 0.
      if (shentsize < SHDR_SIZE) {
        throw this.#error(
          `e_shentsize is ${shentsize}, smaller than the ${SHDR_SIZE}-byte ` +
            "Elf64_Shdr; the file header is corrupted",
        );
      }
      this.#need(shoff, SHDR_SIZE, "section header 0 (extended numbering)");
      if (shnum === 0) shnum = this.#u64n(shoff + 32, "section 0 sh_size (e_shnum)");
      if (shstrndx === ElfSectionIndex.XINDEX) shstrndx = v.getUint32(shoff + 40, true);
      if (phnum === PN_XNUM) phnum = v.getUint32(shoff + 44, true);
    }
    return {
      osabi: b[7],
      type: v.getUint16(16, true),
      machine: v.getUint16(18, true),
      version: v.getUint32(20, true),
      entry: v.getBigUint64(24, true),
      phoff: this.#u64n(32, "e_phoff"),
      shoff,
      flags: v.getUint32(48, true),
      ehsize: v.getUint16(52, true),
      phentsize: v.getUint16(54, true),
      phnum,
      shentsize,
      shnum: shoff === 0 ? 0 : shnum,
      shstrndx,
    };
  }

  #parseSections(): ElfSection[] {
    const h = this.#header;
    if (h.shnum === 0) return [];
    if (h.shentsize < SHDR_SIZE) {
      throw this.#error(
        `e_shentsize is ${h.shentsize}, smaller than the ${SHDR_SIZE}-byte ` +
          "Elf64_Shdr; the file header is corrupted",
      );
    }
    this.#needTable(h.shoff, h.shnum, h.shentsize, "the section header table");
    const v = this.#view;
    const raw: Omit<ElfSection, "name">[] = [];
    const nameOffsets: number[] = [];
    for (let i = 0; i < h.shnum; i++) {
      const o = h.shoff + i * h.shentsize;
      const what = `section header ${i}`;
      nameOffsets.push(v.getUint32(o, true));
      raw.push({
        index: i,
        type: v.getUint32(o + 4, true),
        flags: this.#u64n(o + 8, `${what} sh_flags`),
        addr: v.getBigUint64(o + 16, true),
        offset: this.#u64n(o + 24, `${what} sh_offset`),
        size: this.#u64n(o + 32, `${what} sh_size`),
        link: v.getUint32(o + 40, true),
        info: v.getUint32(o + 44, true),
        addralign: this.#u64n(o + 48, `${what} sh_addralign`),
        entsize: this.#u64n(o + 56, `${what} sh_entsize`),
      });
    }
    if (h.shstrndx === ElfSectionIndex.UNDEF) return raw.map((s) => ({ ...s, name: "" }));
    if (h.shstrndx >= h.shnum) {
      throw this.#error(
        `e_shstrndx ${h.shstrndx} is out of range (${h.shnum} sections); ` +
          "the file header is corrupted",
      );
    }
    const strtab = { ...raw[h.shstrndx], name: ".shstrtab" };
    this.#need(strtab.offset, strtab.size, "the section name string table");
    return raw.map((s, i) => ({
      ...s,
      name: this.#cstring(strtab, nameOffsets[i], `the name of section ${i}`),
    }));
  }

  #parseSegments(): ElfProgramHeader[] {
    const h = this.#header;
    if (h.phnum === 0 || h.phoff === 0) return [];
    if (h.phentsize < PHDR_SIZE) {
      throw this.#error(
        `e_phentsize is ${h.phentsize}, smaller than the ${PHDR_SIZE}-byte ` +
          "Elf64_Phdr; the file header is corrupted",
      );
    }
    this.#needTable(h.phoff, h.phnum, h.phentsize, "the program header table");
    const v = this.#view;
    const out: ElfProgramHeader[] = [];
    for (let i = 0; i < h.phnum; i++) {
      const o = h.phoff + i * h.phentsize;
      const what = `program header ${i}`;
      out.push({
        index: i,
        type: v.getUint32(o, true),
        flags: v.getUint32(o + 4, true),
        offset: this.#u64n(o + 8, `${what} p_offset`),
        vaddr: v.getBigUint64(o + 16, true),
        paddr: v.getBigUint64(o + 24, true),
        filesz: this.#u64n(o + 32, `${what} p_filesz`),
        memsz: this.#u64n(o + 40, `${what} p_memsz`),
        align: this.#u64n(o + 48, `${what} p_align`),
      });
    }
    return out;
  }

  #parseSymbols(s: ElfSection): ElfSymbol[] {
    if (s.type !== ElfSectionType.SYMTAB && s.type !== ElfSectionType.DYNSYM) {
      throw this.#error(
        `section ${this.#label(s)} has type ${s.type}, not SHT_SYMTAB (2) or ` +
          "SHT_DYNSYM (11); pass a symbol table section",
      );
    }
    const stride = this.#stride(s, SYM_SIZE);
    const count = Math.floor(s.size / stride);
    this.#need(s.offset, count * stride, `symbol table ${this.#label(s)}`);
    const strtab = this.#sections[s.link];
    if (strtab === undefined) {
      throw this.#error(
        `symbol table ${this.#label(s)} links to string table ${s.link}, ` +
          `which does not exist (${this.#sections.length} sections); the file is corrupted`,
      );
    }
    this.#need(strtab.offset, strtab.size, `string table ${this.#label(strtab)}`);
    let xindex: ElfSection | undefined;
    const v = this.#view;
    const out: ElfSymbol[] = new Array(count);
    const names = new Map<number, string>();
    for (let i = 0; i < count; i++) {
      const o = s.offset + i * stride;
      const nameOff = v.getUint32(o, true);
      let name = names.get(nameOff);
      if (name === undefined) {
        name = this.#cstring(strtab, nameOff, `the name of symbol ${i} in ${this.#label(s)}`);
        names.set(nameOff, name);
      }
      const info = v.getUint8(o + 4);
      let shndx = v.getUint16(o + 6, true);
      let special = shndx === ElfSectionIndex.UNDEF || shndx >= ElfSectionIndex.LORESERVE;
      if (shndx === ElfSectionIndex.XINDEX) {
        xindex ??= this.#sections.find((x) =>
          x.type === ElfSectionType.SYMTAB_SHNDX && x.link === s.index
        );
        if (xindex !== undefined) {
          this.#need(xindex.offset + i * 4, 4, `extended section index of symbol ${i}`);
          shndx = v.getUint32(xindex.offset + i * 4, true);
          special = false;
        }
      }
      out[i] = {
        index: i,
        name,
        value: v.getBigUint64(o + 8, true),
        size: this.#u64n(o + 16, `the size of symbol ${i} in ${this.#label(s)}`),
        type: info & 0xf,
        bind: info >> 4,
        visibility: v.getUint8(o + 5) & 3,
        shndx,
        section: special ? null : (this.#sections[shndx]?.name ?? null),
      };
    }
    return out;
  }

  // ---- checked primitives ------------------------------------------------

  #error(message: string): ElfError {
    return new ElfError(this.#source, message);
  }

  #label(s: ElfSection): string {
    return s.name ? `${s.index} (${s.name})` : `${s.index}`;
  }

  #resolveSection(section: ElfSection | string | number): ElfSection {
    if (typeof section === "object") return section;
    const s = typeof section === "string" ? this.section(section) : this.sectionAt(section);
    if (s === undefined) {
      throw this.#error(
        `no section ${JSON.stringify(section)}; list the available ones with ` +
          "`readelf -S`",
      );
    }
    return s;
  }

  /** Throws unless `[offset, offset + length)` lies inside the image. */
  #need(offset: number, length: number, what: string): void {
    const size = this.#bytes.length;
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
      length < 0 || offset > size || length > size - offset
    ) {
      throw this.#error(
        `truncated or corrupted ELF: ${what} needs ${length} bytes at offset ${offset} but ` +
          `the file has ${size} bytes; re-copy or rebuild the file`,
      );
    }
  }

  #needTable(offset: number, count: number, entsize: number, what: string): void {
    const size = this.#bytes.length;
    if (count > size / entsize) {
      throw this.#error(
        `truncated or corrupted ELF: ${what} claims ${count} entries of ` +
          `${entsize} bytes but the file has only ${size} bytes; re-copy or rebuild the file`,
      );
    }
    this.#need(offset, count * entsize, what);
  }

  #stride(s: ElfSection, min: number): number {
    if (s.size === 0) return s.entsize >= min ? s.entsize : min;
    if (s.entsize < min) {
      throw this.#error(
        `section ${this.#label(s)} has sh_entsize ${s.entsize}, smaller than ` +
          `the ${min}-byte entry it holds; the section header is corrupted`,
      );
    }
    return s.entsize;
  }

  /** An unsigned 64-bit field that must fit a safe integer (offsets, sizes). */
  #u64n(offset: number, what: string): number {
    this.#need(offset, 8, what);
    const lo = this.#view.getUint32(offset, true);
    const hi = this.#view.getUint32(offset + 4, true);
    if (hi > MAX_HI) {
      throw this.#error(
        `${what} (at offset ${offset}) is ${this.#view.getBigUint64(offset, true)}, ` +
          "too large to be a file offset or size; the file is corrupted",
      );
    }
    return hi * TWO_32 + lo;
  }

  #cstring(table: ElfSection, offset: number, what: string): string {
    if (offset >= table.size) {
      if (offset === 0) return ""; // an empty table still names "" at offset 0
      throw this.#error(
        `${what}: offset ${offset} is outside its ${table.size}-byte string ` +
          "table; the file is corrupted",
      );
    }
    const start = table.offset + offset;
    const end = table.offset + table.size;
    const b = this.#bytes;
    let i = start;
    let ascii = true;
    let short = "";
    for (; i < end; i++) {
      const c = b[i];
      if (c === 0) break;
      if (c >= 0x80) ascii = false;
      else if (i - start < 256) short += String.fromCharCode(c);
    }
    if (i === end) {
      throw this.#error(
        `${what}: the string at offset ${offset} is not NUL-terminated inside ` +
          "its string table; the file is corrupted",
      );
    }
    if (ascii) return i - start <= 256 ? short : latin1(b.subarray(start, i));
    return decodeUtf8(b.subarray(start, i));
  }
}
