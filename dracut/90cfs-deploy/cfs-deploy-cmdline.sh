#!/bin/sh
# dracut cmdline hook: cfs.emergency on the kernel command line asks for an
# emergency shell when the boot fails, as it does when cfs-init is the
# initramfs's /init. In a dracut initramfs that shell is dracut's own: the
# module's /etc/cmdline.d/90cfs-deploy.conf turns it off (rd.shell=0) so
# that a failed boot reboots; this later file turns it on again. An
# explicit rd.shell=0 on the kernel command line still wins, since dracut
# reads the kernel command line after /etc/cmdline.d.
type getargbool >/dev/null 2>&1 || . /lib/dracut-lib.sh

if getargbool 0 cfs.emergency; then
	echo "rd.shell=1" >/etc/cmdline.d/99cfs-deploy-emergency.conf
fi
