// Test object 2: global data. `.rodata` holds a filter set at load time,
// `.data` a counter with a non-zero initial value, `.bss` zeroed counters.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile u32 target_pid = 0; // a thread id, set by the loader (rodata option)
const volatile u64 step = 1;        // left at its default
u64 seen = 1000;                    // .data: every getpid, any process
u64 matched;                        // .bss: getpid calls of target_pid
u64 others;                         // .bss: getpid calls of other threads

SEC("tp/syscalls/sys_enter_getpid")
int count_getpid(void *ctx) {
  u32 pid = (u32)bpf_get_current_pid_tgid(); // the thread id
  __sync_fetch_and_add(&seen, 1);
  if (pid != target_pid) {
    __sync_fetch_and_add(&others, 1);
    return 0;
  }
  __sync_fetch_and_add(&matched, step);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
