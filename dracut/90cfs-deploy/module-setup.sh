#!/bin/bash
# dracut module: puts cfs-init into a dracut-built initramfs and runs its
# setup-root step after systemd has mounted the physical root on /sysroot.
# cfs-init then verifies the composefs image named by composefs= on the
# kernel command line and rebuilds /sysroot as the verified root.

check() {
	# Only when asked for (dracut -a cfs-deploy or add_dracutmodules+=).
	return 255
}

depends() {
	echo systemd
	return 0
}

installkernel() {
	instmods erofs overlay loop
	# fs-verity hashes with the accelerated sha256 when it is loaded first.
	hostonly='' instmods sha256-ssse3 sha256_ssse3 2>/dev/null || :
}

install() {
	local bin
	bin=$(command -v cfs-init || echo /usr/lib/cfs-deploy/cfs-init)
	inst_simple "$bin" /usr/lib/cfs-deploy/cfs-init
	inst_simple "$moddir/cfs-setup-root.service" "$systemdsystemunitdir/cfs-setup-root.service"
	$SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target cfs-setup-root.service
}
