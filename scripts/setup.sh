#!/usr/bin/env bash
# Installs what bpfpack needs and is missing: Debian packages (as root, via
# apt-get) and the npm-pinned Deno + npm packages. Idempotent: a no-op, in
# well under a second, when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.5
# Debian packages:
#   gcc libc6-dev            benchmark baseline, uprobe test binaries
#   clang-19 llvm-19         the compiler stage (bookworm's plain clang is 14)
#   bpftool                  vmlinux.h from BTF
#   libbpf-dev               bpf_helpers.h & co. (headers only; nothing links libbpf)
#   skopeo                   a standard OCI tool that copies bundles (tests)
#   xz-utils zstd            kernel image payloads (BTF extraction)
#   openssh-server           sshd for the ssh transport tests (a real sshd on 127.0.0.1)
#   openssh-client           ssh, the ssh transport's client
#   qemu-system-arm          the VM lab's arm64 guests (tests/vm/, Debian cloud kernels, TCG)
#   qemu-system-x86          the VM lab's x86_64 guests
#   cpio                     the VM lab's initramfs archives
APT_PACKAGES=(gcc libc6-dev clang-19 llvm-19 bpftool libbpf-dev skopeo xz-utils zstd openssh-server openssh-client qemu-system-arm qemu-system-x86 cpio)

say() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${missing[*]}"
    say "run as root, or: sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
  say "npm is missing: install Node.js (apt-get install nodejs npm) and run again"
  exit 1
fi

# The pinned Deno lives in its own npm prefix (scripts/deno) so that neither
# `deno task` nor `deno compile` ever sees the 95 MB binary in node_modules.
DENO=scripts/deno/node_modules/.bin/deno
have=""
if [ -x "$DENO" ]; then
  have=$("$DENO" --version 2>/dev/null | awk 'NR==1{print $2}')
fi
if [ "$have" != "$DENO_VERSION" ]; then
  say "installing deno $DENO_VERSION from npm"
  npm ci --prefix scripts/deno --no-audit --no-fund --loglevel=error >/dev/null
fi
# A deno under node_modules/.bin would make `deno task` run the binary as a script.
rm -f node_modules/.bin/deno
# Project npm packages (zod; @types/node for type-checking node: built-ins).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
