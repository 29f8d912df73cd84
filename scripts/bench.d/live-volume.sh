#!/usr/bin/env bash
# scripts/bench.d/live-volume.sh: live volumes (issue 13's performance rows), also run by
# `bash scripts/bench --live-volume`. On the standard volume (make-volume.sh 2048 50, or
# BENCH_SIZE_MB/BENCH_FILL) and its image, with fio (installed here if missing: apt-get):
#   peer: a loop device over a plain copy of the volume, on the same disk as the writes directory;
#   ours: the raw view file of `imgmount --volume -o rw --keep-writes DIR` (durable writes).
# Rows (fio with O_DIRECT on both, libaio; median of BENCH_RUNS, default 3; page cache dropped first):
#   sequential 1 MiB writes (MiB/s, target ours >= 0.5x), 4 KiB random writes iodepth 16 (IOPS,
#   >= 0.25x), 4 KiB random reads iodepth 16 of the blocks just written (IOPS, >= 0.5x);
#   --point hold time, p99 of 100 points taken while fio writes (target <= 20 ms);
#   --commit of 100 MiB of changed blocks vs writing 100 MiB sequentially to the same disk (dd,
#   fsync) (target <= 1.2x).
#   sudo bash scripts/bench.d/live-volume.sh     (needs root; BENCH_DIR default <project>/.bench)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${BENCH_DIR:-$ROOT/.bench}/live-volume
SIZE_MB=${BENCH_SIZE_MB:-2048}
FILL=${BENCH_FILL:-50}
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_FIO_SECONDS:-15}
SHARED=${BENCH_SHARED:-/work/shared/bench}
[ "$(id -u)" = 0 ] || { echo "live-volume bench: must run as root" >&2; exit 1; }
command -v fio >/dev/null || { apt-get install -y fio >/dev/null || { echo "live-volume bench: cannot install fio" >&2; exit 1; }; }
IMGMOUNT="node $ROOT/bin/imgmount.js --cache-dir $WORK/cache"
IMGBACKUP="node $ROOT/bin/imgbackup.js"
mkdir -p "$WORK"
VOL=$WORK/vol-${SIZE_MB}M-${FILL}.img
IMG=$WORK/vol-${SIZE_MB}M-${FILL}.imgx
[ -f "$VOL" ] || "$SHARED/make-volume.sh" "$SIZE_MB" "$FILL" "$VOL" >/dev/null
[ -f "$IMG" ] || $IMGBACKUP -q "$VOL" "$IMG"
MNT=$WORK/mnt
mkdir -p "$MNT"
LOOP=
FIO_PID=
cleanup() {
  set +e
  [ -n "$FIO_PID" ] && kill "$FIO_PID" 2>/dev/null && wait "$FIO_PID" 2>/dev/null
  mountpoint -q "$MNT" && $IMGMOUNT -u "$MNT"
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  rm -rf "$WORK/copy.img" "$WORK/writes" "$WORK"/*.imgx.out "$WORK/seq.bin" "$WORK/src100.bin"
}
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# fio JSON -> write/read bandwidth (MiB/s) or IOPS
fio_num() { # FILE rw(write|read) field(bw|iops)
  node -e "const j=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8')).jobs[0][process.argv[2]];
    console.log(process.argv[3]==='bw' ? (j.bw_bytes/1048576).toFixed(1) : j.iops.toFixed(0))" "$1" "$2" "$3"
}
run_fio() { # TARGET NAME ARGS... -> prints the number
  local target=$1 name=$2; shift 2
  cold
  fio --output-format=json --output="$WORK/fio-$name.json" --name="$name" --filename="$target" --ioengine=libaio \
    --direct=1 --group_reporting "$@" >/dev/null
}

SEQ_ARGS=(--rw=write --bs=1M --iodepth=4 --size=1G --end_fsync=1)
RW_ARGS=(--rw=randwrite --bs=4k --iodepth=16 --size=256M --time_based --runtime="$SECS" --randrepeat=0)
RR_ARGS=(--rw=randread --bs=4k --iodepth=16 --size=256M --time_based --runtime="$SECS")

declare -A R
measure_target() { # KIND TARGET
  local kind=$1 target=$2 seq=() rw=() rr=()
  for _ in $(seq "$RUNS"); do
    run_fio "$target" "seq-$kind" "${SEQ_ARGS[@]}"; seq+=("$(fio_num "$WORK/fio-seq-$kind.json" write bw)")
    run_fio "$target" "rw-$kind" "${RW_ARGS[@]}"; rw+=("$(fio_num "$WORK/fio-rw-$kind.json" write iops)")
    run_fio "$target" "rr-$kind" "${RR_ARGS[@]}"; rr+=("$(fio_num "$WORK/fio-rr-$kind.json" read iops)")
  done
  R[seq-$kind]=$(printf '%s\n' "${seq[@]}" | median)
  R[rw-$kind]=$(printf '%s\n' "${rw[@]}" | median)
  R[rr-$kind]=$(printf '%s\n' "${rr[@]}" | median)
}

# peer: a loop device over a plain copy of the volume (same disk as the writes directory)
cp --sparse=never "$VOL" "$WORK/copy.img"
LOOP=$(losetup -f --show --direct-io=on "$WORK/copy.img")
measure_target loop "$LOOP"
losetup -d "$LOOP"; LOOP=
rm -f "$WORK/copy.img"

# ours: the raw view of a --volume -o rw mount with a kept (durable) writes directory
rm -rf "$WORK/writes"
$IMGMOUNT --volume -o rw --keep-writes "$WORK/writes" "$IMG" "$MNT"
FILE=$(ls "$MNT"/*.img)
measure_target ours "$FILE"

# --point under write load: 100 points while fio writes
fio --name=load --filename="$FILE" --ioengine=libaio --direct=1 --rw=randwrite --bs=64k --iodepth=4 --size=512M \
  --offset=1G --time_based --runtime=600 >/dev/null 2>&1 &
FIO_PID=$!
sleep 1
held=()
for _ in $(seq 100); do held+=("$($IMGMOUNT --point "$MNT" --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).heldMs))")"); done
kill "$FIO_PID"; wait "$FIO_PID" 2>/dev/null || true; FIO_PID=
P99=$(printf '%s\n' "${held[@]}" | sort -g | awk '{a[NR]=$1} END{printf "%.2f", a[int(NR*0.99 + 0.999)]}')
P50=$(printf '%s\n' "${held[@]}" | sort -g | awk '{a[NR]=$1} END{printf "%.2f", a[int((NR+1)/2)]}')

# commit of 100 MiB of changed blocks vs writing 100 MiB sequentially to the same disk
$IMGMOUNT --commit "$MNT" "$WORK/base.imgx.out" --force >/dev/null  # the dirty set starts here
head -c 104857600 /dev/urandom >"$WORK/src100.bin"
commit=(); seqw=()
for i in $(seq "$RUNS"); do
  # 100 MiB of changed blocks: 1 MiB pieces spread over the volume
  for k in $(seq 0 99); do dd if="$WORK/src100.bin" of="$FILE" bs=1M skip="$k" seek=$(( (k * 17 + i) % (SIZE_MB - 1) )) count=1 conv=notrunc status=none; done
  sync "$FILE"
  cat "$WORK/src100.bin" >/dev/null
  cold; cat "$WORK/src100.bin" >/dev/null
  t0=$(now); dd if="$WORK/src100.bin" of="$WORK/seq.bin" bs=1M conv=fsync status=none; seqw+=($(( ($(now) - t0) / 1000000 )))
  rm -f "$WORK/seq.bin"
  cold
  t0=$(now); $IMGMOUNT --commit "$MNT" "$WORK/c$i.imgx.out" --force >/dev/null; commit+=($(( ($(now) - t0) / 1000000 )))
done
COMMIT=$(printf '%s\n' "${commit[@]}" | median)
SEQW=$(printf '%s\n' "${seqw[@]}" | median)
STATS=$($IMGMOUNT --points "$MNT" --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.stringify(JSON.parse(s).stats)))")
$IMGMOUNT -u "$MNT"

printf '\n## live volume (%s MiB, %s%% full; median of %s; fio %s s per random row)\n\n' "$SIZE_MB" "$FILL" "$RUNS" "$SECS"
printf '| row | loop device (copy) | imgmount --volume -o rw | ratio | target |\n|---|---|---|---|---|\n'
printf '| sequential 1 MiB writes (MiB/s) | %s | %s | %sx | >= 0.5x |\n' "${R[seq-loop]}" "${R[seq-ours]}" "$(ratio "${R[seq-ours]}" "${R[seq-loop]}")"
printf '| 4 KiB random writes, iodepth 16 (IOPS) | %s | %s | %sx | >= 0.25x |\n' "${R[rw-loop]}" "${R[rw-ours]}" "$(ratio "${R[rw-ours]}" "${R[rw-loop]}")"
printf '| 4 KiB random reads of written blocks, iodepth 16 (IOPS) | %s | %s | %sx | >= 0.5x |\n' "${R[rr-loop]}" "${R[rr-ours]}" "$(ratio "${R[rr-ours]}" "${R[rr-loop]}")"
printf '| --point: writes held, p99 of 100 under write load (ms) | | %s (p50 %s) | | <= 20 ms |\n' "$P99" "$P50"
printf '| commit of 100 MiB changed vs dd 100 MiB + fsync (ms) | %s | %s | %sx | <= 1.2x |\n' "$SEQW" "$COMMIT" "$(ratio "$COMMIT" "$SEQW")"
printf '\nwrite log at the end: %s\n' "$STATS"
