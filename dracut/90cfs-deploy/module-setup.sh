#!/bin/bash
# dracut module: puts cfs-init into a dracut-built systemd initramfs and runs
# its setup-root step after systemd has mounted the physical root on
# /sysroot. cfs-init then verifies the composefs image named by composefs=
# on the kernel command line and rebuilds /sysroot as the verified root.
#
# cfs-init is taken from $CFS_DEPLOY_CFS_INIT when set (cfs-deploy's
# `rollout --initramfs dracut` sets it), else /usr/lib/cfs-deploy/cfs-init,
# else the first cfs-init in PATH. Without it the build fails: an image
# with the unit and no binary could never boot.

check() {
	# Only when asked for (dracut --add cfs-deploy, or add_dracutmodules+=
	# " cfs-deploy " in dracut.conf.d): it changes what the initramfs
	# boots.
	return 255
}

depends() {
	# systemd-initrd provides initrd-root-fs.target and sysroot.mount's
	# generator; dracut-systemd the emergency handling the failure path
	# relies on (rd.shell, rd.emergency).
	echo systemd systemd-initrd dracut-systemd
	return 0
}

installkernel() {
	# hostonly='': these are needed whatever the build host has loaded.
	# In dracut's default hostonly mode only modules in use on the build
	# host are kept, and the build host need not be running composefs.
	# -c: a kernel without them fails the build instead of the boot.
	hostonly='' instmods -c erofs overlay loop || return 1
	# fs-verity hashes with the accelerated sha256 when it is loaded
	# first; optional, older kernels call it differently.
	hostonly='' instmods sha256-ssse3 sha256_ssse3 2>/dev/null
	return 0
}

cfs_deploy_find_init() {
	if [[ -n $CFS_DEPLOY_CFS_INIT ]]; then
		echo "$CFS_DEPLOY_CFS_INIT"
	elif [[ -x /usr/lib/cfs-deploy/cfs-init ]]; then
		echo /usr/lib/cfs-deploy/cfs-init
	else
		command -v cfs-init
	fi
}

install() {
	local bin
	bin=$(cfs_deploy_find_init)
	if [[ -z $bin || ! -f $bin || ! -x $bin ]]; then
		# dracut ignores install()'s status; exiting is the only way to
		# stop it from writing an image that cannot boot.
		dfatal "cfs-deploy: cfs-init not found (${bin:-no CFS_DEPLOY_CFS_INIT, no /usr/lib/cfs-deploy/cfs-init, none in PATH}); install it or set CFS_DEPLOY_CFS_INIT"
		exit 1
	fi
	if ! inst_simple "$bin" /usr/lib/cfs-deploy/cfs-init; then
		dfatal "cfs-deploy: cannot install $bin into the initramfs"
		exit 1
	fi
	inst_simple "$moddir/cfs-setup-root.service" "$systemdsystemunitdir/cfs-setup-root.service" || exit 1
	# A plain link rather than systemctl add-wants, which goes by the
	# build host's unit paths. Requires, not Wants: the switch into
	# /sysroot must not happen unless setup-root succeeded.
	mkdir -p "$initdir$systemdsystemunitdir/initrd-root-fs.target.requires"
	ln -sfn ../cfs-setup-root.service "$initdir$systemdsystemunitdir/initrd-root-fs.target.requires/cfs-setup-root.service"

	# A failed boot reboots (so that the boot loader can fall back)
	# instead of waiting in dracut's emergency shell for a console that
	# nobody watches; the kernel command line can still say rd.shell.
	mkdir -p "$initdir/etc/cmdline.d"
	echo "rd.shell=0 rd.emergency=reboot" >"$initdir/etc/cmdline.d/90cfs-deploy.conf"
	inst_hook cmdline 90 "$moddir/cfs-deploy-cmdline.sh"
}
