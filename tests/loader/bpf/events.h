// The event shared by events.bpf.c and the test that reads it.
#pragma once

struct open_event {
  u32 tgid;
  u32 pid;
  char comm[16];
  char filename[96];
};
