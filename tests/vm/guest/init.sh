#!/bin/busybox sh
# /init of the bpfpack VM lab guest (tests/vm/): a busybox userland, the target's deno and the
# bpfd runtime. The host reaches bpfd through the virtio-serial port named "ctl" (qemu's stdio on
# the host) and an action agent through the port named "act" (a unix socket on the host).
#
# Kernel command line switches (read from /proc/cmdline):
#   bpfpack.once=1   serve one bpfd session on ctl, then power off (the launcher scripts);
#                    otherwise bpfd is restarted after every session and the host learns that a
#                    session ended from the line "BPFPACK-VM-SESSION-END <status>" on ctl.
# Before each session, /run/bpfd.args (if present, written through the agent) adds arguments
# to that one bpfd run, e.g. "--probe-mode tracefs".

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/opt/bpfpack/bin:/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/tmp TMPDIR=/tmp DENO_DIR=/tmp/deno NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

say() { echo "bpfpack-init: [$(cut -d' ' -f1 /proc/uptime)] $*" >/dev/console; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf
mkdir -p "$DENO_DIR"
hostname bpfpack-vm

# Modular virtio (Debian 6.1): the host wrote the load order, dependencies first.
if [ -f /etc/bpfpack/modules ]; then
  while read -r ko; do
    [ -n "$ko" ] && { insmod "/lib/modules/$ko" || say "insmod $ko failed"; }
  done </etc/bpfpack/modules
fi

# The /dev node of the virtio port called $1 (its name arrives shortly after the device).
port_named() {
  i=0
  while [ $i -lt 200 ]; do
    for d in /sys/class/virtio-ports/*; do
      if [ "$(cat "$d/name" 2>/dev/null)" = "$1" ]; then
        echo "/dev/${d##*/}"
        return 0
      fi
    done
    i=$((i + 1))
    sleep 0.05
  done
  return 1
}

once=0
grep -q 'bpfpack.once=1' /proc/cmdline && once=1

ctl=$(port_named ctl) || {
  say "no virtio port named ctl (ports: $(cat /sys/class/virtio-ports/*/name 2>/dev/null)); powering off"
  poweroff -f
}
say "up: $(uname -r) $(uname -m), ctl=$ctl"

if [ "$once" = 0 ]; then
  act=$(port_named act) && sh /etc/bpfpack/agent.sh "$act" &
fi

while :; do
  args=""
  if [ -f /run/bpfd.args ]; then
    args=$(cat /run/bpfd.args)
    rm -f /run/bpfd.args
  fi
  # shellcheck disable=SC2086 # $args is a word list on purpose
  bpfd $args 0<>"$ctl" 1>&0 2>/dev/console &
  echo $! >/run/bpfd.pid
  wait $!
  code=$?
  rm -f /run/bpfd.pid
  if [ "$once" = 1 ]; then
    say "bpfd exited with status $code; powering off"
    poweroff -f
  fi
  printf 'BPFPACK-VM-SESSION-END %d\n' "$code" 1<>"$ctl"
  [ "$code" = 0 ] || sleep 1
done
