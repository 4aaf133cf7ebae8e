#!/bin/sh
# cfs-deploy-generator, installed by `cfs-deploy commit --prepare-os`.
#
# cfs-init writes systemd units for the mounts it makes before systemd
# starts (/var, the physical root, the image) to @UNITS_DIR@.
# systemd reads units only from its own directories, so this generator
# copies them, with their *.requires/ and *.wants/ directories of links,
# into its output directory ($1). Without them the boot still works but
# /var is not ordered and stopped as a unit: so this never fails the boot.
# Errors go to stderr (the journal); no /dev/null, which may not exist yet.
units=${CFS_DEPLOY_UNITS_DIR:-@UNITS_DIR@}
out=$1
[ -n "$out" ] && [ -d "$units" ] || exit 0
PATH=/usr/bin:/bin
for f in "$units"/*; do
	[ -e "$f" ] || [ -L "$f" ] || continue
	name=${f##*/}
	if [ -d "$f" ] && [ ! -L "$f" ]; then
		# Other generators may fill the same directory
		# (local-fs.target.requires/): add to it.
		mkdir -p "$out/$name" || continue
		for l in "$f"/*; do
			[ -e "$l" ] || [ -L "$l" ] || continue
			cp -Pf "$l" "$out/$name/"
		done
	else
		cp -Pf "$f" "$out/"
	fi
done
exit 0
