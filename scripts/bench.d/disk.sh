#!/usr/bin/env bash
# scripts/bench.d/disk.sh: issue 15's performance rows.
# FAT32: a FAT32 volume holding the standard tree's first 10,000 files (sorted paths, from the
# standard volume make-volume.sh 2048 50, or BENCH_SIZE_MB/BENCH_FILL), copied in with mcopy -s.
#   (a) imgmount of its image (tree view, cold header cache) + find with stat of every entry
#   (b) fusefat -o ro on the raw FAT volume + the same find
#   target: (a) <= 0.5x (b). Page cache dropped before each run; rows interleaved; median of
#   BENCH_RUNS (default 3).
# XFS (imgbackup vs xfs_copy / partclone.xfs, --kernel mount + find vs a loop mount): needs the
# pseudo-volume technique (issue 15 part 2), which is not implemented: the rows say so.
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

walk() { find "$1" -printf '%s %m %T@\n' >/dev/null; }
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
echo "| XFS: imgbackup vs xfs_copy / partclone.xfs | n/a | | <= 1.2 (pseudo-volume technique not implemented) |"
echo "| XFS: imgmount --kernel + find vs loop mount | n/a | | <= 2 (pseudo-volume technique not implemented) |"
