// Bad input: a variable in a section the loader does not know.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("my_settings") u32 setting = 7;

SEC("tracepoint/syscalls/sys_enter_getppid")
int uses_setting(void *ctx) {
  return setting;
}

char LICENSE[] SEC("license") = "GPL";
