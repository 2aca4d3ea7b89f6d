#!/bin/sh
# The action agent of the bpfpack VM lab guest, on the virtio port given as $1.
# Request (one line):  <id> <base64 of a shell command line>
# Answer:              BPFPACK-ACT <id> <exit status> <byte count>\n then exactly that many bytes
#                      of the command's combined stdout and stderr.
# The command runs with busybox sh -c, stdin from /dev/null. The port reads EOF while the host
# side is not connected: wait and read again.
exec 3<>"$1"
while :; do
  if ! read -r id b64 <&3; then
    sleep 0.1
    continue
  fi
  [ -n "$id" ] || continue
  cmd=$(printf '%s' "$b64" | base64 -d)
  sh -c "$cmd" </dev/null >/tmp/.act.out 2>&1
  code=$?
  printf 'BPFPACK-ACT %s %d %d\n' "$id" "$code" "$(wc -c </tmp/.act.out)" >&3
  cat /tmp/.act.out >&3
done
