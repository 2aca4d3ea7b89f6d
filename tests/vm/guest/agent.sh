#!/bin/sh
# The action agent of the bpfpack VM lab guest, on the virtio port given as $1.
# Request (one line):  <id> <base64 of a shell command line>
# Answer:              BPFPACK-ACT <id> <exit status> <byte count>\n then exactly that many bytes
#                      of the command's combined stdout and stderr.
# The command runs with busybox sh -c, stdin from /dev/null. The port reads EOF while the host
# side is not connected: before the first request, wait and read again; after it, the host
# (the process that booted this VM) is gone, so power off rather than run on unattended.
exec 3<>"$1"
seen=0
while :; do
  if ! read -r id b64 <&3; then
    if [ "$seen" = 1 ]; then
      echo "bpfpack-agent: the host closed the act port; powering off" >/dev/console
      poweroff -f
    fi
    sleep 0.1
    continue
  fi
  [ -n "$id" ] || continue
  seen=1
  cmd=$(printf '%s' "$b64" | base64 -d)
  sh -c "$cmd" </dev/null >/tmp/.act.out 2>&1
  code=$?
  printf 'BPFPACK-ACT %s %d %d\n' "$id" "$code" "$(wc -c </tmp/.act.out)" >&3
  cat /tmp/.act.out >&3
done
