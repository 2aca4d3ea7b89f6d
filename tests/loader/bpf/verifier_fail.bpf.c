// Bad input: the verifier must refuse this program (a map value is read
// without the NULL check), after the object's maps were created.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 8);
  __type(key, u32);
  __type(value, u64);
} vf_values SEC(".maps");

u64 vf_counter;

SEC("tracepoint/syscalls/sys_enter_getppid")
int vf_fine(void *ctx) {
  vf_counter++;
  return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int vf_unchecked(void *ctx) {
  u32 key = 1;
  u64 *v = bpf_map_lookup_elem(&vf_values, &key);
  return *v; // no NULL check
}

char LICENSE[] SEC("license") = "GPL";
