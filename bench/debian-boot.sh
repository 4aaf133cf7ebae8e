#!/bin/bash
# Boots the Debian test OS of TestDebianBoot (tests/vm/debian_boot_test.go)
# and prints its timings: QEMU start to multi-user.target (host clock),
# cfs-init's stage and steps (its booted.json), systemd-analyze and the
# initramfs size, for the first boot and the boot of the update, plus the
# host-side commit and install times and the test's wall time.
#
# Needs what the VM suite needs (root, qemu-system-x86, mmdebstrap; see
# scripts/install-deps). The Debian tree and the kernel come from
# /var/cache/cfs-deploy-vm, built or downloaded on first use.
#
# Usage: bench/debian-boot.sh
#   CFS_DEPLOY_VM_DEBIAN_INSECURE=1  install on the host into an insecure
#                                    repository instead of through an
#                                    installer VM (a minute quicker)
#   LOG=FILE                       keep the whole test log there
set -euo pipefail
cd "$(dirname "$0")/.."
log=${LOG:-$(mktemp /tmp/debian-boot.XXXXXX.log)}
status=0
CFS_DEPLOY_VM_REQUIRED=1 go test -count=1 -run '^TestDebianBoot$' ./tests/vm -v -timeout 30m >"$log" 2>&1 || status=$?
grep -E 'timing |host: cfs-deploy commit|installed |tree [0-9]+ MB|wall time' "$log" | sed 's/^ *debian_boot_test.go:[0-9]*: //'
if ((status != 0)); then
	echo "TestDebianBoot failed (exit $status); its failures:"
	grep -E '^\s+debian_boot_test.go:[0-9]+: (boot [12]:|machine-id|.*failed)' "$log" | grep -v ', options "' || true
	echo "full log: $log"
fi
exit $status
