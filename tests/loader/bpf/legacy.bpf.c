// Test object 5: a legacy `maps` section (struct bpf_map_def, as BCC-era and
// iproute2 objects have them). Built without -g: no BTF at all.
typedef unsigned int u32;
typedef unsigned long long u64;

struct bpf_map_def {
  u32 type;
  u32 key_size;
  u32 value_size;
  u32 max_entries;
  u32 map_flags;
};

#define SEC(name) __attribute__((section(name), used))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;

struct bpf_map_def SEC("maps") calls = {
  .type = 2, // BPF_MAP_TYPE_ARRAY
  .key_size = sizeof(u32),
  .value_size = sizeof(u64),
  .max_entries = 1,
};

struct bpf_map_def SEC("maps") by_tgid = {
  .type = 1, // BPF_MAP_TYPE_HASH
  .key_size = sizeof(u32),
  .value_size = sizeof(u64),
  .max_entries = 128,
  .map_flags = 1, // BPF_F_NO_PREALLOC
};

SEC("tracepoint/syscalls/sys_enter_getppid")
int legacy_count(void *ctx) {
  u32 zero = 0;
  u64 *n = bpf_map_lookup_elem(&calls, &zero);
  if (n)
    __sync_fetch_and_add(n, 1);
  return 0;
}

char _license[] SEC("license") = "GPL";
u32 _version SEC("version") = 0x060000;
