// Bad input: a program in a section with no known program type.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("sprocket/thing")
int odd(void *ctx) {
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
