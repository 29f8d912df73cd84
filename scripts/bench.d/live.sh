#!/usr/bin/env bash
# scripts/bench.d/live.sh: imgbackup of a mounted, in-use volume (issue 14's performance rows).
# On the standard volume (make-volume.sh 2048 50, or BENCH_SIZE_MB/BENCH_FILL), attached to a
# loop device: (a) imgbackup of the unmounted volume; then mounted read-write with one writer
# appending 1 MiB/s to a file on it: (b) imgbackup --live (freeze window, end freeze, total),
# (c) imgbackup --freeze. Page cache dropped before each run; images go to $WORK (another fs
# than the volume's mount, which must not be frozen). Rounds of (a), (b), (c) interleaved;
# median of BENCH_RUNS rounds (default 3).
# Targets: --live freeze ≤ 0.5 s and total ≤ 1.2x (a); --freeze total ≤ 1.1x (a).
#   sudo bash scripts/bench.d/live.sh          (needs root; BENCH_DIR default <project>/.bench)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${BENCH_DIR:-$ROOT/.bench}/live
SIZE_MB=${BENCH_SIZE_MB:-2048}
FILL=${BENCH_FILL:-50}
RUNS=${BENCH_RUNS:-3}
SHARED=${BENCH_SHARED:-/work/shared/bench}
BIN="node $ROOT/dist/bundle/imgbackup.mjs"
mkdir -p "$WORK"
VOL=$WORK/vol-${SIZE_MB}M-${FILL}.img
[ -f "$VOL" ] || "$SHARED/make-volume.sh" "$SIZE_MB" "$FILL" "$VOL" >/dev/null
MNT=$WORK/mnt
mkdir -p "$MNT"
LOOP=$(losetup -f --show "$VOL")
WRITER_PID=
cleanup() {
  set +e
  [ -n "$WRITER_PID" ] && kill "$WRITER_PID" 2>/dev/null && wait "$WRITER_PID" 2>/dev/null
  mountpoint -q "$MNT" && { fsfreeze -u "$MNT" 2>/dev/null; rm -f "$MNT/bench-writer.log"; umount "$MNT"; }
  losetup -d "$LOOP"
  rm -f "$WORK"/out.imgm
}
trap cleanup EXIT
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

start_writer() {
  mount "$LOOP" "$MNT"
  rm -f "$MNT/bench-writer.log" # (a run stopped before its cleanup leaves it: the volume would fill up)
  # one writer, 1 MiB/s: 64 KiB every 62.5 ms, appended to one file (never fsynced: as an app would)
  node -e "
const fs = require('fs'); const fd = fs.openSync(process.argv[1], 'a'); const b = Buffer.alloc(65536, 7);
setInterval(() => fs.writeSync(fd, b), 62.5);" "$MNT/bench-writer.log" &
  WRITER_PID=$!
  sleep 1
}
stop_writer() {
  kill "$WRITER_PID"; wait "$WRITER_PID" 2>/dev/null || true; WRITER_PID=
  rm -f "$MNT/bench-writer.log"; umount "$MNT"
}
# interleaved: each round backs up the unmounted volume, then mounts it, starts the writer and
# runs --live and --freeze (so a machine whose load changes meanwhile weighs on every row alike)
plain=(); live=(); liveFreeze=(); liveEnd=(); liveRounds=(); frz=(); exc=()
for _ in $(seq "$RUNS"); do
  cold; t0=$(now); $BIN -q -f "$LOOP" "$WORK/out.imgm"; sync; plain+=($(( ($(now) - t0) / 1000000 )))
  start_writer
  cold; t0=$(now); $BIN --live --json -f "$LOOP" "$WORK/out.imgm" >"$WORK/live.json"; sync; live+=($(( ($(now) - t0) / 1000000 )))
  liveFreeze+=($(node -e "console.log(require('$WORK/live.json').freeze.ms)"))
  liveEnd+=($(node -e "console.log(require('$WORK/live.json').freeze.endMs)"))
  liveRounds+=($(node -e "const f=require('$WORK/live.json').freeze; console.log(f.rounds + '+' + f.endRounds)"))
  exc+=($(node -e "const j=require('$WORK/live.json'); console.log(j.live.exceptionCount + '/' + j.live.files)"))
  cold; t0=$(now); $BIN --freeze -q -f "$LOOP" "$WORK/out.imgm"; sync; frz+=($(( ($(now) - t0) / 1000000 )))
  stop_writer
done
P=$(printf '%s\n' "${plain[@]}" | median)
L=$(printf '%s\n' "${live[@]}" | median)
F=$(printf '%s\n' "${frz[@]}" | median)
LF=$(printf '%s\n' "${liveFreeze[@]}" | median)
LE=$(printf '%s\n' "${liveEnd[@]}" | median)
echo "volume ${SIZE_MB} MiB, ${FILL}% full; writer appending 1 MiB/s; median of $RUNS (ms)"
echo "| row | total ms | vs unmounted | freeze ms |"
echo "| --- | --- | --- | --- |"
echo "| imgbackup, unmounted | $P | 1.00 | - |"
echo "| imgbackup --live, mounted rw + writer | $L | $(awk "BEGIN{printf \"%.2f\", $L/$P}") | $LF (+ $LE at the end) |"
echo "| imgbackup --freeze, mounted rw + writer | $F | $(awk "BEGIN{printf \"%.2f\", $F/$P}") | whole backup |"
echo "per round (ms): unmounted ${plain[*]}; --live ${live[*]}; --freeze ${frz[*]}"
echo "--live freeze windows (ms, FIFREEZE call included): ${liveFreeze[*]}; at the end: ${liveEnd[*]}; freezes (start+end): ${liveRounds[*]}"
echo "exceptions (logged/files) per --live run: ${exc[*]}"
