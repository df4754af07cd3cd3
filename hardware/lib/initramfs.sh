# Shared by hardware/qemu/build (x86_64) and hardware/pi/build-aarch64: packs the hub's initramfs.
# Source it from a bash script; it defines functions only.
#
#   initramfs_require_static FILE HINT
#       fails with HINT unless FILE is a statically linked executable (the image has no libc).
#   initramfs_make OUT BUSYBOX HUB INIT MODDIR [MODULE...]
#       writes OUT (a gzip'd newc cpio): busybox and its applet links in /bin, HUB as
#       /sbin/outpost-hub, INIT as /init, and the MODULEs (default $INITRAMFS_MODULES) with their
#       dependencies, in load order, resolved from MODDIR/modules.dep (so a kernel update needs no
#       edit), decompressed into /lib/modules and listed in /etc/modules for /init to insmod.

# What the hub needs from the kernel: virtio NIC and disk (PCI transport), ext4 for the data disk.
INITRAMFS_MODULES=${INITRAMFS_MODULES:-"virtio_pci virtio_net virtio_blk ext4 crc32c_generic"}
INITRAMFS_APPLETS="sh mount umount mkdir insmod ip cat echo sleep poweroff sync mkfs.ext2 mke2fs ls ps kill dmesg"

initramfs_require_static() {
  [ -e "$1" ] || { echo "missing $1: $2" >&2; return 1; }
  file -L "$1" | grep -Eq 'statically linked|static-pie linked' || { echo "$1 is not statically linked: $2" >&2; return 1; }
}

initramfs_make() ( # a subshell: its temporary tree and trap stay local
  set -euo pipefail
  local out=$1 busybox=$2 hub=$3 init=$4 moddir=$5; shift 5
  local modules=("$@"); [ ${#modules[@]} -gt 0 ] || read -ra modules <<< "$INITRAMFS_MODULES"
  [ -f "$moddir/modules.dep" ] || { echo "no $moddir/modules.dep" >&2; exit 1; }
  local stage; stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,sbin,proc,sys,dev,data,tmp,lib/modules,etc}
  cp "$busybox" "$stage/bin/busybox"
  local applet
  for applet in $INITRAMFS_APPLETS; do ln -s busybox "$stage/bin/$applet"; done
  cp "$hub" "$stage/sbin/outpost-hub"

  declare -A seen=(); local order=()
  add_module() { # add_module PATH: its dependencies first
    local rel=$1 deps d; [ -n "${seen[$rel]:-}" ] && return; seen[$rel]=1
    deps=$(grep "^$rel:" "$moddir/modules.dep" | cut -d: -f2)
    for d in $deps; do add_module "$d"; done
    order+=("$rel")
  }
  local m rel name
  for m in "${modules[@]}"; do
    rel=$(grep -E "/$m\.ko(\.xz|\.zst)?:" "$moddir/modules.dep" | cut -d: -f1 | head -1)
    [ -n "$rel" ] || { echo "module $m not found in $moddir" >&2; exit 1; }
    add_module "$rel"
  done
  : > "$stage/etc/modules"
  for rel in "${order[@]}"; do
    name=$(basename "$rel"); name=${name%.xz}; name=${name%.zst}
    case "$rel" in
      *.xz) xz -dc "$moddir/$rel" > "$stage/lib/modules/$name" ;;
      *.zst) zstd -qdc "$moddir/$rel" > "$stage/lib/modules/$name" ;;
      *) cp "$moddir/$rel" "$stage/lib/modules/$name" ;;
    esac
    echo "$name" >> "$stage/etc/modules"
  done
  cp "$init" "$stage/init"; chmod +x "$stage/init"
  mkdir -p "$(dirname "$out")"
  ( cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 ) > "$out"
)
