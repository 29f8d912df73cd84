#!/usr/bin/env bash
# scripts/bench.d/disk.sh: issue 15's performance rows.
# FAT32: a FAT32 volume holding the standard tree's first 10,000 files (sorted paths, from the
# standard volume make-volume.sh 2048 50, or BENCH_SIZE_MB/BENCH_FILL), copied in with mcopy -s.
#   (a) imgmount of its image (tree view, cold header cache) + find with stat of every entry
#   (b) fusefat -o ro on the raw FAT volume + the same find
#   target: (a) <= 0.5x (b). Page cache dropped before each run; rows interleaved; median of
#   BENCH_RUNS (default 3).
# XFS (the pseudo-volume technique): the standard volume's tree copied (cp -a) onto an XFS volume
# of the same size. Rows, interleaved, cold caches, median of BENCH_RUNS:
#   (c) imgbackup XFS -> image  vs  (d) xfs_copy XFS -> file  vs  (e) partclone.xfs -c (image file);
#       target (c) <= 1.2x (d) or (e) (both ratios printed); each ends with sync
#   (f) imgmount --kernel of the image + find/stat  vs  (g) mount -o ro,loop of the raw XFS + the
#       same find; target (f) <= 2x (g), and the image bytes read after the mount (the daemon's
#       counters, SIGUSR1) must not grow during the find: 0 bytes beyond the header.
# BENCH_XFS=0 skips the XFS rows, BENCH_FAT=0 the FAT row.
#   sudo bash scripts/bench.d/disk.sh          (needs root; BENCH_DIR default <project>/.bench)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${BENCH_DIR:-$ROOT/.bench}/disk
SIZE_MB=${BENCH_SIZE_MB:-2048}
FILL=${BENCH_FILL:-50}
RUNS=${BENCH_RUNS:-3}
FILES=${BENCH_FAT_FILES:-10000}
SHARED=${BENCH_SHARED:-/work/shared/bench}
NODE="node"
mkdir -p "$WORK"
command -v fusefat >/dev/null || { echo "disk.sh: fusefat missing (apt-get install fusefat)" >&2; exit 1; }
command -v mcopy >/dev/null || { echo "disk.sh: mcopy missing (apt-get install mtools)" >&2; exit 1; }
VOL=$WORK/vol-${SIZE_MB}M-${FILL}.img
[ -f "$VOL" ] || "$SHARED/make-volume.sh" "$SIZE_MB" "$FILL" "$VOL" >/dev/null
MNT=$WORK/mnt
SRCMNT=$WORK/src
mkdir -p "$MNT" "$SRCMNT"
export XDG_CACHE_HOME=$WORK/cache MTOOLS_SKIP_CHECK=1
cleanup() {
  set +e
  mountpoint -q "$MNT" && { $NODE "$ROOT/bin/imgmount.js" -u "$MNT" 2>/dev/null || fusermount -u "$MNT"; }
  mountpoint -q "$SRCMNT" && umount "$SRCMNT"
}
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; rm -rf "$XDG_CACHE_HOME"; }

walk() { find "$1" -printf '%s %m %T@\n' >/dev/null; }

if [ "${BENCH_FAT:-1}" = 1 ]; then
FAT=$WORK/fat32-${FILES}.img
if [ ! -f "$FAT" ]; then
  mount -o ro,loop "$VOL" "$SRCMNT"
  STAGE=$WORK/stage
  rm -rf "$STAGE"; mkdir -p "$STAGE"
  (cd "$SRCMNT" && find . -type f | LC_ALL=C sort | awk -v n="$FILES" 'NR <= n' | xargs -d '\n' cp --parents -p -t "$STAGE")
  umount "$SRCMNT"
  KB=$(du -sk "$STAGE" | cut -f1)
  SIZE_KB=$(( KB * 13 / 10 + 65536 ))
  rm -f "$FAT.tmp"
  mkfs.vfat -F 32 -C "$FAT.tmp" "$SIZE_KB" >/dev/null
  mcopy -s -m -i "$FAT.tmp" "$STAGE"/* ::/
  rm -rf "$STAGE"
  mv "$FAT.tmp" "$FAT"
fi
IMG=$WORK/fat32-${FILES}.imgm
[ -f "$IMG" ] || $NODE "$ROOT/bin/imgbackup.js" -q "$FAT" "$IMG"
ENTRIES=$(MTOOLS_SKIP_CHECK=1 mdir -/ -b -i "$FAT" ::/ | wc -l)

ours=(); peer=()
for _ in $(seq "$RUNS"); do
  cold; t0=$(now); $NODE "$ROOT/bin/imgmount.js" "$IMG" "$MNT"; walk "$MNT"; ours+=($(( ($(now) - t0) / 1000000 )))
  $NODE "$ROOT/bin/imgmount.js" -u "$MNT"
  cold; t0=$(now); fusefat -o ro "$FAT" "$MNT"; walk "$MNT"; peer+=($(( ($(now) - t0) / 1000000 )))
  fusermount -u "$MNT"
done
O=$(printf '%s\n' "${ours[@]}" | median)
P=$(printf '%s\n' "${peer[@]}" | median)
echo "FAT32 volume $(du -h --apparent-size "$FAT" | cut -f1), $FILES files ($ENTRIES entries by mdir); median of $RUNS (ms), cold caches"
echo "| row | ms | vs fusefat | target |"
echo "| --- | --- | --- | --- |"
echo "| imgmount (tree) + find/stat of every entry | $O | $(awk "BEGIN{printf \"%.2f\", $O/$P}") | <= 0.50 |"
echo "| fusefat -o ro (raw FAT volume) + find/stat | $P | 1.00 | |"
fi

[ "${BENCH_XFS:-1}" = 1 ] || exit 0
command -v xfs_copy >/dev/null || { echo "disk.sh: xfs_copy missing (apt-get install xfsprogs)" >&2; exit 1; }
command -v partclone.xfs >/dev/null || { echo "disk.sh: partclone.xfs missing (apt-get install partclone)" >&2; exit 1; }
XFS=$WORK/xfs-${SIZE_MB}M-${FILL}.img
if [ ! -f "$XFS" ]; then
  rm -f "$XFS.tmp"; truncate -s "${SIZE_MB}M" "$XFS.tmp"; mkfs.xfs -q "$XFS.tmp"
  XMNT=$WORK/xfs-fill; mkdir -p "$XMNT"
  mount -o ro,loop "$VOL" "$SRCMNT"; mount -o loop "$XFS.tmp" "$XMNT"
  cp -a "$SRCMNT"/. "$XMNT"/
  umount "$XMNT" "$SRCMNT"
  mv "$XFS.tmp" "$XFS"
fi
XIMG=$WORK/xfs.imgx
OUT=$WORK/xfs-out
stats() { # the daemon's image bytes read so far
  local pid; pid=$(pgrep -f "imgmount.*$XIMG" | head -1)
  local log=$XDG_CACHE_HOME/imgmount/imgmount.log before; before=$(wc -c < "$log")
  kill -USR1 "$pid"; sleep 0.3
  tail -c +$((before + 1)) "$log" | grep -o '"image":{"reads":[0-9]*,"bytesRead":[0-9]*' | grep -o '[0-9]*$' | tail -1
}
ib=(); xc=(); pc=(); km=(); lm=(); beyond=()
for _ in $(seq "$RUNS"); do
  rm -f "$XIMG"; cold; t0=$(now); $NODE "$ROOT/bin/imgbackup.js" -q "$XFS" "$XIMG"; sync; ib+=($(( ($(now) - t0) / 1000000 )))
  rm -f "$OUT"; cold; t0=$(now); xfs_copy -d "$XFS" "$OUT" >/dev/null; sync; xc+=($(( ($(now) - t0) / 1000000 )))
  rm -f "$OUT"; cold; t0=$(now); partclone.xfs -q -c -s "$XFS" -o "$OUT" >/dev/null 2>&1; sync; pc+=($(( ($(now) - t0) / 1000000 ))); rm -f "$OUT"
  cold; t0=$(now); said=$($NODE "$ROOT/bin/imgmount.js" -v --kernel "$XIMG" "$MNT"); walk "$MNT"; km+=($(( ($(now) - t0) / 1000000 )))
  at_mount=$(echo "$said" | grep -o 'read from the image: [0-9]*' | grep -o '[0-9]*$')
  beyond+=($(( $(stats) - at_mount )))
  $NODE "$ROOT/bin/imgmount.js" -u "$MNT"
  cold; t0=$(now); mount -o ro,loop,nouuid "$XFS" "$MNT"; walk "$MNT"; lm+=($(( ($(now) - t0) / 1000000 ))); umount "$MNT"
done
IB=$(printf '%s\n' "${ib[@]}" | median); XC=$(printf '%s\n' "${xc[@]}" | median); PC=$(printf '%s\n' "${pc[@]}" | median)
KM=$(printf '%s\n' "${km[@]}" | median); LM=$(printf '%s\n' "${lm[@]}" | median)
XENTRIES=$(mount -o ro,loop,nouuid "$XFS" "$MNT" && find "$MNT" | wc -l; umount "$MNT")
echo
echo "XFS volume ${SIZE_MB} MiB (the standard tree, $XENTRIES entries), image $(du -h --apparent-size "$XIMG" | cut -f1); median of $RUNS (ms), cold caches"
echo "| row | ms | ratio | target |"
echo "| --- | --- | --- | --- |"
echo "| imgbackup (pseudo-volume: kernel walk + XFS free space) | $IB | $(awk "BEGIN{printf \"%.2f\", $IB/$XC}") vs xfs_copy, $(awk "BEGIN{printf \"%.2f\", $IB/$PC}") vs partclone.xfs | <= 1.2 |"
echo "| xfs_copy -d | $XC | | |"
echo "| partclone.xfs -c | $PC | | |"
echo "| imgmount --kernel + find | $KM | $(awk "BEGIN{printf \"%.2f\", $KM/$LM}") vs loop mount | <= 2 |"
echo "| mount -o ro,loop (raw XFS) + find | $LM | 1.00 | |"
echo "| image bytes read by find + stat after the mount (each run) | ${beyond[*]} | | 0 |"
rm -f "$XIMG"
