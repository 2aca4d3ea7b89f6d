// Test object 4: a CO-RE read. Records, per process calling getppid(2), the
// tgid of its real parent as the kernel sees it; struct offsets come from the
// running kernel's BTF at load (kernel-side CO-RE).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, u32);   // tgid
  __type(value, u32); // real parent's tgid
} parents SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx) {
  struct task_struct *task = (struct task_struct *)bpf_get_current_task();
  u32 tgid = BPF_CORE_READ(task, tgid);
  u32 ppid = BPF_CORE_READ(task, real_parent, tgid);
  bpf_map_update_elem(&parents, &tgid, &ppid, BPF_ANY);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
