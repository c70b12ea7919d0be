#!/usr/bin/env bash
# Cortex-M4 benchmark: builds the firmware for thumbv7em-none-eabihf, runs
# every scenario under
#   qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
#     -icount shift=0 -semihosting-config enable=on,target=native
# renews the machine-to-machine devices on the host, reads the ELF sections
# and rewrites the generated block of docs/PERFORMANCE.md ("Cortex-M4").
# Pass --no-write to only print the tables. Needs qemu-system-arm and
# `rustup target add thumbv7em-none-eabihf`.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run -p tally-wallet --example m4 -- bench "$@"
