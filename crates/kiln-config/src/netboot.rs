//! What `netboot = true` adds to an image's initramfs: kiln's boot script
//! (`boot=kiln-netboot` on the kernel command line), its DHCP hook, and
//! the initramfs-tools hook and setting that pull in the modules and
//! busybox's applets (`udhcpc`, `wget`, `sha256sum`, `cpio`, `zcat`) it
//! uses.
//!
//! The files are data, not code: `kiln-build` writes them into the root
//! before the `initramfs` step, and `kiln-plan` folds their text into the
//! variant's input digest, so a new script rebuilds the layer.

/// Where the files go in the root, their mode and their text.
pub const FILES: &[(&str, u32, &str)] = &[
    ("etc/initramfs-tools/hooks/kiln-netboot", 0o755, HOOK),
    ("etc/initramfs-tools/conf.d/kiln-netboot.conf", 0o644, CONF),
    ("etc/initramfs-tools/scripts/kiln-netboot", 0o644, SCRIPT),
    ("etc/initramfs-tools/scripts/kiln-netboot-dhcp", 0o755, DHCP),
];

/// The package whose applets the script uses.
pub const PACKAGE: &str = "busybox";

/// The kernel command line's `boot=` value that selects the script.
pub const BOOT: &str = "kiln-netboot";

const HOOK: &str = r#"#!/bin/sh
# kiln netboot (written by kiln for `netboot = true`): the modules the boot
# script needs, whatever MODULES says.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
. /usr/share/initramfs-tools/hook-functions
manual_add_modules loop squashfs overlay virtio_net e1000 e1000e
for m in af_packet; do
	if modinfo -k "${version:?}" "$m" >/dev/null 2>&1; then
		manual_add_modules "$m"
	fi
done
"#;

const CONF: &str = "# kiln netboot (written by kiln for `netboot = true`): the boot script
# uses busybox's udhcpc, wget, sha256sum, cpio and zcat.
BUSYBOX=y
";

const DHCP: &str = r#"#!/bin/sh
# kiln netboot (written by kiln): udhcpc's hook. Sets the address, the
# default route and the name servers of the lease.
case "$1" in
deconfig)
	ip addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	for r in $router; do
		ip route add default via "$r" dev "$interface"
		break
	done
	: > /etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
	echo "kiln-netboot: $interface has $ip/${mask:-24}${router:+, router $router}" > /dev/console
	;;
esac
exit 0
"#;

const SCRIPT: &str = r#"# kiln netboot (written by kiln for `netboot = true`): boot into RAM.
# Selected by `boot=kiln-netboot` on the kernel command line;
# initramfs-tools' /init sources this file and calls mountroot.
#
# The root is an overlayfs: the base squashfs, read-only, as the lower
# directory; a tmpfs as the upper one, into which each role overlay (an
# overlay.cpio.gz, whiteouts included) is unpacked, in order.
#
# The kernel command line (`kiln boot-server` writes it into its iPXE
# scripts; the manifest records it for each netboot variant):
#   kiln.url=URL                   prefix of the relative names below
#   kiln.base=URL                  the base squashfs
#   kiln.base.sha256=HEX           its SHA-256, checked before it is used
#   kiln.overlay=URL[,URL...]      the overlays, in order
#   kiln.overlay.sha256=HEX[,...]  their SHA-256s
#   BOOTIF=01-aa-bb-cc-dd-ee-ff    the interface (as PXE and iPXE pass it)
#   kiln.if=NAME                   the interface, by name
#   kiln.retries=N                 tries of each step (5), with backoff
#   kiln.on_fail=shell|reboot      after the last try (shell)
#   kiln.syslog=HOST[:PORT]        also send these lines to a syslog server
# Without a URL, the files come from the initramfs itself (extra initrds
# the boot loader passed): /netboot/base.squashfs and /netboot/*.cpio.gz.

kn_say()
{
	echo "kiln-netboot: $*"
	echo "$*" >> /run/kiln/boot.log
	if [ -n "$KN_SYSLOG_ON" ]; then logger -t kiln-netboot -- "$*"; fi
}

kn_params()
{
	KN_URL= KN_BASE= KN_BASE_SHA= KN_OVERLAYS= KN_OVERLAY_SHAS=
	KN_MAC= KN_IF_WANTED= KN_RETRIES=5 KN_ON_FAIL=shell KN_SYSLOG=
	for x in $(cat /proc/cmdline); do
		case "$x" in
		kiln.url=*) KN_URL="${x#kiln.url=}" ;;
		kiln.base=*) KN_BASE="${x#kiln.base=}" ;;
		kiln.base.sha256=*) KN_BASE_SHA="${x#kiln.base.sha256=}" ;;
		kiln.overlay=* | kiln.overlays=*) KN_OVERLAYS=$(echo "${x#*=}" | tr , ' ') ;;
		kiln.overlay.sha256=*) KN_OVERLAY_SHAS=$(echo "${x#*=}" | tr , ' ') ;;
		kiln.if=*) KN_IF_WANTED="${x#kiln.if=}" ;;
		kiln.retries=*) KN_RETRIES="${x#kiln.retries=}" ;;
		kiln.on_fail=*) KN_ON_FAIL="${x#kiln.on_fail=}" ;;
		kiln.syslog=*) KN_SYSLOG="${x#kiln.syslog=}" ;;
		BOOTIF=*)
			KN_MAC=$(echo "${x#BOOTIF=}" | sed 's/^[0-9a-fA-F][0-9a-fA-F]-//; s/-/:/g' | tr A-F a-f)
			;;
		esac
	done
	case "$KN_RETRIES" in '' | *[!0-9]*) KN_RETRIES=5 ;; esac
	[ "$KN_RETRIES" -ge 1 ] || KN_RETRIES=1
	case "$KN_ON_FAIL" in shell | reboot) ;; *) KN_ON_FAIL=shell ;; esac
}

# The absolute URL of a name on the command line.
kn_url()
{
	case "$1" in
	http://* | https://*) echo "$1" ;;
	*) echo "${KN_URL%/}/$1" ;;
	esac
}

# After the last try: a rescue shell (exit it to try again) or a reboot.
kn_fail()
{
	case "$KN_ON_FAIL" in
	reboot)
		kn_say "giving up: $*; rebooting (kiln.on_fail=reboot)"
		sleep 3
		reboot -f
		echo b > /proc/sysrq-trigger
		;;
	*)
		panic "kiln-netboot: giving up: $*. This is a rescue shell (kiln.on_fail=shell); leave it to try again."
		;;
	esac
}

# kn_retry WHAT COMMAND...: runs COMMAND until it succeeds, up to
# kiln.retries times with a doubling pause; COMMAND sets KN_PROBLEM.
kn_retry()
{
	local what="$1" n delay
	shift
	while :; do
		n=1
		delay=1
		while :; do
			KN_PROBLEM="failed"
			"$@" && return 0
			[ "$n" -ge "$KN_RETRIES" ] && break
			kn_say "$what: $KN_PROBLEM (try $n of $KN_RETRIES, again in ${delay}s)"
			sleep "$delay"
			n=$((n + 1))
			delay=$((delay * 2))
			[ "$delay" -le 30 ] || delay=30
		done
		kn_say "$what: $KN_PROBLEM (try $n of $KN_RETRIES)"
		kn_fail "$what: $KN_PROBLEM"
	done
}

# The interface: kiln.if=, else BOOTIF='s address, else the first one
# with a device behind it.
kn_iface()
{
	local d
	if [ -n "$KN_IF_WANTED" ]; then
		KN_IF="$KN_IF_WANTED"
		[ -e "/sys/class/net/$KN_IF" ] && return 0
		KN_PROBLEM="there is no interface $KN_IF (kiln.if)"
		return 1
	fi
	for d in /sys/class/net/*; do
		[ -e "$d/device" ] || continue
		if [ -n "$KN_MAC" ] && [ "$(cat "$d/address")" != "$KN_MAC" ]; then
			continue
		fi
		KN_IF="${d##*/}"
		return 0
	done
	if [ -n "$KN_MAC" ]; then
		KN_PROBLEM="no interface has the address $KN_MAC (BOOTIF)"
	else
		KN_PROBLEM="there is no network interface"
	fi
	return 1
}

kn_network()
{
	local i
	kn_iface || return 1
	ip link set "$KN_IF" up
	i=0
	while [ "$(cat "/sys/class/net/$KN_IF/carrier" 2>/dev/null)" != 1 ]; do
		i=$((i + 1))
		if [ "$i" -gt 10 ]; then
			KN_PROBLEM="no link on $KN_IF"
			return 1
		fi
		sleep 1
	done
	if ! udhcpc -i "$KN_IF" -f -q -n -t 4 -T 2 -s /scripts/kiln-netboot-dhcp >/run/kiln/dhcp.log 2>&1; then
		KN_PROBLEM="no DHCP lease on $KN_IF"
		return 1
	fi
	if [ -n "$KN_SYSLOG" ] && [ -z "$KN_SYSLOG_ON" ]; then
		syslogd -R "$KN_SYSLOG" && KN_SYSLOG_ON=1
		sleep 1
		while read -r line; do logger -t kiln-netboot -- "$line"; done < /run/kiln/boot.log
	fi
}

# The last line wget wrote, without its name.
kn_wget_problem()
{
	tail -n 1 /run/kiln/wget.log | sed 's/^wget: //'
}

# kn_fetch URL SHA256 FILE: downloads URL into FILE (resuming a partial
# download), with a progress line every few seconds, and checks its
# SHA-256.
kn_fetch()
{
	local url="$1" want="$2" file="$3" size free pid have got
	if ! wget -S --spider "$url" >/run/kiln/wget.log 2>&1; then
		KN_PROBLEM="$(kn_wget_problem)"
		return 1
	fi
	size=$(sed -n 's/^ *[Cc]ontent-[Ll]ength: *\([0-9]*\).*/\1/p' /run/kiln/wget.log | tail -n 1)
	free=$(sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo)
	if [ -n "$size" ] && [ -n "$free" ] && [ $((size / 1024 + 65536)) -gt "$free" ]; then
		KN_PROBLEM="it needs $((size >> 20)) MiB of RAM and $((free >> 10)) MiB are free"
		return 1
	fi
	kn_say "fetching $url${size:+ ($((size >> 20)) MiB)}"
	wget -q -c -O "$file" "$url" >/run/kiln/wget.log 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 5
		kill -0 "$pid" 2>/dev/null || break
		have=$(stat -c %s "$file" 2>/dev/null || echo 0)
		kn_say "$url: $((have >> 20)) of $((${size:-0} >> 20)) MiB"
	done
	if ! wait "$pid"; then
		KN_PROBLEM="$(kn_wget_problem)"
		[ -n "$KN_PROBLEM" ] || KN_PROBLEM="the download failed"
		return 1
	fi
	if [ -n "$want" ]; then
		got=$(sha256sum "$file" | cut -d ' ' -f 1)
		if [ "$got" != "$want" ]; then
			rm -f "$file"
			KN_PROBLEM="its SHA-256 is $got, not $want"
			return 1
		fi
	fi
	kn_say "$url: $(stat -c %s "$file") bytes${want:+, SHA-256 verified}"
}

# kn_local FILE SHA256: a file the boot loader passed.
kn_local()
{
	local got
	if [ ! -f "$1" ]; then
		KN_PROBLEM="there is no $1 in the initramfs"
		return 1
	fi
	[ -n "$2" ] || return 0
	got=$(sha256sum "$1" | cut -d ' ' -f 1)
	[ "$got" = "$2" ] && return 0
	KN_PROBLEM="its SHA-256 is $got, not $2"
	return 1
}

# The n-th word of a list.
kn_nth()
{
	local n="$1"
	shift
	[ "$n" -le "$#" ] || return 0
	shift $((n - 1))
	echo "$1"
}

mount_top() { :; }
mount_premount() { :; }
mount_bottom() { :; }

mountroot()
{
	local base i overlay url sha files
	mkdir -p /run/kiln/base /run/kiln/rw
	kn_params
	for m in loop squashfs overlay; do modprobe -q "$m" || true; done
	mount -t tmpfs -o mode=0755 tmpfs /run/kiln/rw \
		|| panic "kiln-netboot: cannot mount a tmpfs for the root"
	mkdir -p /run/kiln/rw/upper /run/kiln/rw/work /run/kiln/rw/files
	files=
	case "$KN_BASE$KN_URL" in
	*://*)
		kn_retry "the network" kn_network
		base=/run/kiln/rw/files/base.squashfs
		url=$(kn_url "$KN_BASE")
		KN_FROM="$url"
		kn_retry "$url" kn_fetch "$url" "$KN_BASE_SHA" "$base"
		i=0
		for overlay in $KN_OVERLAYS; do
			i=$((i + 1))
			url=$(kn_url "$overlay")
			sha=$(kn_nth "$i" $KN_OVERLAY_SHAS)
			kn_retry "$url" kn_fetch "$url" "$sha" "/run/kiln/rw/files/overlay-$i.cpio.gz"
			files="$files /run/kiln/rw/files/overlay-$i.cpio.gz"
		done
		;;
	*)
		base="${KN_BASE:-/netboot/base.squashfs}"
		KN_FROM="$base"
		kn_retry "$base" kn_local "$base" "$KN_BASE_SHA"
		[ -n "$KN_OVERLAYS" ] || KN_OVERLAYS=$(ls /netboot/*.cpio.gz 2>/dev/null || true)
		i=0
		for overlay in $KN_OVERLAYS; do
			i=$((i + 1))
			kn_retry "$overlay" kn_local "$overlay" "$(kn_nth "$i" $KN_OVERLAY_SHAS)"
			files="$files $overlay"
		done
		;;
	esac
	mount -t squashfs -o ro,loop "$base" /run/kiln/base \
		|| panic "kiln-netboot: cannot mount the squashfs $base"
	for overlay in $files; do
		(cd /run/kiln/rw/upper && zcat "$overlay" | cpio -i -d -m -u 2>/run/kiln/cpio.log) \
			|| panic "kiln-netboot: cannot unpack $overlay: $(tail -n 1 /run/kiln/cpio.log)"
		rm -f "$overlay"
	done
	mount -t overlay \
		-o lowerdir=/run/kiln/base,upperdir=/run/kiln/rw/upper,workdir=/run/kiln/rw/work \
		overlay "${rootmnt:?}" \
		|| panic "kiln-netboot: cannot mount the overlay"
	set -- $files
	kn_say "root is $KN_FROM with $# overlay(s) in RAM"
}
"#;
