#!/usr/bin/env bash
# scripts/bench.d/incremental.sh: incremental images (issue 12's performance rows).
# The standard volume (make-volume.sh 2048 50, or BENCH_SIZE_MB/BENCH_FILL) is point 0; a copy
# changed by change-volume.sh VOL 1 (1% of the files changed, as many created, 1 MiB appended to
# the 100 MiB file, a directory renamed) is point 1. Each volume file is attached to its own loop
# device (direct I/O); "read" is the growth of that device's /sys/block/loopN/stat sectors across
# the timed command, after sync + drop_caches. Rows, each cold:
#   (a) imgbackup of point 1 (full)                        the reference
#   (b) imgbackup --base P0 --changes=metadata point 1     target: time <= 0.15 x (a), read <= 1.1 x (control + changed data)
#   (c) imgbackup --base P0 --changes=hash point 1         target: time <= 1.1 x (a)
#   (d) dump -1 of point 1 after a dump -0 of point 0 (same loop device name, -D dumpdates file)
#   (e) restic backup of point 1 loop-mounted read-only, into the local repository that already
#       holds point 0's snapshot (--parent that snapshot; RESTIC_PASSWORD is a fixed test one)
# Then a chain of five points (change-volume.sh with seeds 1..4, an incremental each, metadata
# mode), and: imgmount of the fifth point -> first ls and find, vs the same on a full image of
# that point (cold header cache).
# Median of BENCH_RUNS (default 1: "run once"). Needs root, dump, restic.
#   sudo bash scripts/bench.d/incremental.sh     (or: bash scripts/bench --incremental)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${BENCH_DIR:-$ROOT/.bench}/incremental
SIZE_MB=${BENCH_SIZE_MB:-2048}
FILL=${BENCH_FILL:-50}
RUNS=${BENCH_RUNS:-1}
SHARED=${BENCH_SHARED:-/work/shared/bench}
BACKUP="node $ROOT/dist/bundle/imgbackup.mjs"
MOUNT="node $ROOT/dist/bundle/imgmount.mjs"
export RESTIC_PASSWORD=imgmount-bench
[ "$(id -u)" = 0 ] || { echo "incremental.sh: needs root" >&2; exit 1; }
for t in dump restic; do command -v $t >/dev/null || { echo "incremental.sh: $t missing (apt-get install dump restic)" >&2; exit 1; }; done
mkdir -p "$WORK"
export TMPDIR=$WORK   # change-volume.sh's mount point and imgbackup's spool: not on tmpfs
V0=$WORK/vol0.img V1=$WORK/vol1.img
[ -f "$V0" ] || "$SHARED/make-volume.sh" "$SIZE_MB" "$FILL" "$V0" >/dev/null
MNT=$WORK/mnt FMNT=$WORK/fmnt
mkdir -p "$MNT" "$FMNT"
LOOPS=()
cleanup() {
  set +e
  for m in "$FMNT" "$MNT"; do mountpoint -q "$m" && { $MOUNT -u "$m" 2>/dev/null || umount "$m"; }; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
}
trap cleanup EXIT
attach() { local l; l=$(losetup -f --show --direct-io=on "$1"); LOOPS+=("$l"); echo "$l"; }
detach() { losetup -d "$1"; local keep=(); for l in "${LOOPS[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done; LOOPS=("${keep[@]}"); }
sectors() { awk '{print $3}' "/sys/block/$(basename "$1")/stat"; }
now() { date +%s%N; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
bk_json() { local out=$1; shift; $BACKUP "$@" >"$out"; }
# timed LOOP CMD...: runs CMD cold, prints "ms bytes_read"
timed() {
  local loop=$1; shift
  cold; local s0 t0; s0=$(sectors "$loop"); t0=$(now)
  "$@" >/dev/null; sync
  echo "$(( ($(now) - t0) / 1000000 )) $(( ($(sectors "$loop") - s0) * 512 ))"
}

echo "== point 0: full image, dump -0, restic snapshot" >&2
L0=$(attach "$V0")
$BACKUP -q -f "$L0" "$WORK/p0.imgm"
rm -f "$WORK/dumpdates"; touch "$WORK/dumpdates"
dump -0u -q -D "$WORK/dumpdates" -f "$WORK/dump0" "$L0" 2>"$WORK/dump0.log"
rm -rf "$WORK/restic"; restic init -q --repo "$WORK/restic" >/dev/null
mount -o ro "$L0" "$MNT"
restic -q --repo "$WORK/restic" backup --host bench "$MNT" >/dev/null
umount "$MNT"
SNAP0=$(restic --repo "$WORK/restic" snapshots --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).pop().short_id))")
DUMPDEV=$L0
detach "$L0"

echo "== point 1: change-volume.sh 1" >&2
cp --sparse=always "$V0" "$V1"
"$SHARED/change-volume.sh" "$V1" 1 >"$WORK/change1.log"
# dump -1 needs the level-0 date of the same device name: attach point 1 where point 0 was
losetup --direct-io=on "$DUMPDEV" "$V1"; LOOPS+=("$DUMPDEV"); L1=$DUMPDEV

full=(); fullR=(); meta=(); metaR=(); hash=(); hashR=(); dmp=(); dmpR=(); rst=(); rstR=()
for _ in $(seq "$RUNS"); do
  read -r ms rd < <(timed "$L1" $BACKUP -q -f "$L1" "$WORK/full1.imgm"); full+=("$ms"); fullR+=("$rd")
  read -r ms rd < <(timed "$L1" bk_json "$WORK/inc-meta.json" -f --json --base "$WORK/p0.imgm" --changes=metadata "$L1" "$WORK/inc-meta.imgm"); meta+=("$ms"); metaR+=("$rd")
  read -r ms rd < <(timed "$L1" $BACKUP -q -f --base "$WORK/p0.imgm" --changes=hash "$L1" "$WORK/inc-hash.imgm"); hash+=("$ms"); hashR+=("$rd")
  read -r ms rd < <(timed "$L1" dump -1 -q -D "$WORK/dumpdates" -f "$WORK/dump1" "$L1"); dmp+=("$ms"); dmpR+=("$rd")
  mount -o ro "$L1" "$MNT"
  r0=$(du -sb "$WORK/restic" | cut -f1)
  read -r ms rd < <(timed "$L1" restic -q --repo "$WORK/restic" backup --host bench --parent "$SNAP0" "$MNT"); rst+=("$ms"); rstR+=("$rd")
  umount "$MNT"
  RGROW=$(( $(du -sb "$WORK/restic" | cut -f1) - r0 ))
done
size() { stat -c %s "$1"; }
M() { printf '%s\n' "$@" | median; }
F=$(M "${full[@]}") FR=$(M "${fullR[@]}") MM=$(M "${meta[@]}") MR=$(M "${metaR[@]}") H=$(M "${hash[@]}") HR=$(M "${hashR[@]}")
D=$(M "${dmp[@]}") DR=$(M "${dmpR[@]}") R=$(M "${rst[@]}") RR=$(M "${rstR[@]}")
# CHG: the data blocks that changed (stored); CFD: the data of the files whose inode changed, plus
# every block no unchanged file owns (what --changes=metadata reads by design: a changed file is
# read whole, since an overwrite in place leaves its block list as it was)
read -r CTRL CHG HDR CFD < <(node -e "const j=require('$WORK/inc-meta.json'); console.log(j.controlBlocks*j.blockSize, j.incremental.changedBlocks*j.blockSize, j.headerBytes, (j.usedBlocks-j.controlBlocks-j.incremental.trustedBlocks)*j.blockSize)")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
mib() { awk -v a="$1" 'BEGIN { printf "%.1f MiB", a / 1048576 }'; }

cat <<EOF
volume ${SIZE_MB} MiB, ${FILL}% full; change-volume.sh 1; median of $RUNS run(s), cold caches
| row | time | read from source | image / output | vs full imgbackup |
| --- | --- | --- | --- | --- |
| imgbackup (full) of point 1 | ${F} ms | $(mib "$FR") | $(mib "$(size "$WORK/full1.imgm")") | 1 |
| imgbackup --base --changes=metadata | ${MM} ms | $(mib "$MR") (control $(mib "$CTRL") + changed blocks $(mib "$CHG"): $(ratio "$MR" "$((CTRL + CHG))")x; control + changed files' data $(mib "$CFD"): $(ratio "$MR" "$((CTRL + CFD))")x) | $(mib "$(size "$WORK/inc-meta.imgm")") (header $(mib "$HDR")) | time $(ratio "$MM" "$F")x (target <= 0.15) |
| imgbackup --base --changes=hash | ${H} ms | $(mib "$HR") | $(mib "$(size "$WORK/inc-hash.imgm")") | time $(ratio "$H" "$F")x (target <= 1.1) |
| dump -1 (after dump -0) | ${D} ms | $(mib "$DR") | $(mib "$(size "$WORK/dump1")") | metadata/dump: $(ratio "$MM" "$D")x |
| restic backup (2nd snapshot) | ${R} ms | $(mib "$RR") | repository +$(mib "$RGROW") | metadata/restic: $(ratio "$MM" "$R")x |
EOF

echo "== points 2..4 (change-volume.sh 1 with seeds 2..4), an incremental each (metadata)" >&2
prev=$WORK/inc-meta.imgm
detach "$L1"
for k in 2 3 4; do
  cp --sparse=always "$V1" "$WORK/vol$k.img"; rm -f "$V1"; V1=$WORK/vol$k.img
  SEED=$k "$SHARED/change-volume.sh" "$V1" 1 >"$WORK/change$k.log"
  L=$(attach "$V1")
  $BACKUP -q -f --base "$prev" "$L" "$WORK/p$k.imgm"
  [ "$k" = 4 ] && $BACKUP -q -f "$L" "$WORK/full4.imgm"
  detach "$L"
  prev=$WORK/p$k.imgm
done
# mount -> first ls, then find, cold (empty header cache each time)
mount_walk() {
  rm -rf "$WORK/xdg"; mkdir -p "$WORK/xdg"; cold
  local t0 t1 t2; t0=$(now)
  XDG_CACHE_HOME=$WORK/xdg $MOUNT "$1" "$FMNT" >/dev/null
  ls "$FMNT" >/dev/null; t1=$(now)
  find "$FMNT" | wc -l >/dev/null; t2=$(now)
  $MOUNT -u "$FMNT" >/dev/null
  echo "$(( (t1 - t0) / 1000000 )) $(( (t2 - t1) / 1000000 ))"
}
ils=(); ifind=(); fls=(); ffind=()
for _ in $(seq "$RUNS"); do
  read -r a b < <(mount_walk "$WORK/p4.imgm"); ils+=("$a"); ifind+=("$b")
  read -r a b < <(mount_walk "$WORK/full4.imgm"); fls+=("$a"); ffind+=("$b")
done
IL=$(M "${ils[@]}") IF=$(M "${ifind[@]}") FL=$(M "${fls[@]}") FF=$(M "${ffind[@]}")

cat <<EOF
| imgmount 5th point -> first ls | ${IL} ms | | | vs full image ${FL} ms: $(ratio "$IL" "$FL")x (target <= 1.1) |
| imgmount 5th point: find | ${IF} ms | | | vs full image ${FF} ms: $(ratio "$IF" "$FF")x (target <= 1.1) |
EOF
