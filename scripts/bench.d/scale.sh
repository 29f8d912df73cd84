#!/usr/bin/env bash
# scripts/bench.d/scale.sh: `scripts/bench --scale` (not in CI; root). Big, nearly empty volumes
# (issue 17): sparse ext4 volumes of 2 TiB and 16 TiB (lazy inode tables, as mke2fs makes them
# on big disks) holding ~55 MB of files, ours against the e2fsprogs peers:
#   image size          imgbackup image           vs what `e2image -ra` allocates (du)
#   header              imginfo headerBytes       vs the size of `e2image -Q` (all metadata, qcow2)
#   backup time         imgbackup                 vs e2image -ra          (target ≤ 1.0×)
#   mount → first ls    imgmount (cold cache)     vs a loop mount (and fuse2fs if installed)
# Volumes live in /dev/shm (tmpfs: the host's ext4 cannot hold a file of 16 TiB, and sparse
# files there cost only what they hold), so times are CPU and syscalls, not disk reads.
# Runs are interleaved (ours, peer, ours, peer...) and the median is reported; a row whose first
# run takes longer than BENCH_SCALE_SLOW seconds is run once.
#
# Environment: BENCH_SCALE_DIR (default /dev/shm/imgmount-bench-scale, removed at the end),
#   BENCH_SCALE_SIZES (default "2T 16T"), BENCH_SCALE_FILES_MB (default 55), BENCH_RUNS (default 3),
#   BENCH_SCALE_SLOW (default 60), BENCH_TIMEOUT (seconds one run of ours may take, default 900),
#   BENCH_DIR (where results-scale.md goes; default <project>/.bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/scripts/bench.d
# shellcheck source=lib.sh
source "$HERE/lib.sh"

WORK=${BENCH_SCALE_DIR:-/dev/shm/imgmount-bench-scale}
SIZES=${BENCH_SCALE_SIZES:-"2T 16T"}
FILES_MB=${BENCH_SCALE_FILES_MB:-55}
RUNS=${BENCH_RUNS:-3}
SLOW=${BENCH_SCALE_SLOW:-60}
OURS_TIMEOUT=${BENCH_TIMEOUT:-900}
RESULTS=${BENCH_DIR:-$ROOT/.bench}/results-scale.md
export XDG_CACHE_HOME=$WORK/xdg-cache

[ "$(id -u)" = 0 ] || die "must run as root (loop mounts, drop_caches)"
for p in mke2fs e2image dumpe2fs; do command -v "$p" >/dev/null || die "$p not found (apt-get install e2fsprogs)"; done
[ -x "$ROOT/bin/imgbackup.js" ] || die "build first (npm run build)"
HAVE_FUSE2FS=0; command -v fuse2fs >/dev/null && HAVE_FUSE2FS=1
mkdir -p "$(dirname "$RESULTS")"

MNT=$WORK/mnt
cleanup() {
  set +e
  for m in "$MNT"/*; do [ -d "$m" ] && unmount_path "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ns() { date +%s%N; }
secs() { awk -v t="$1" 'BEGIN { printf "%.2f", t / 1e9 }'; }
median() { tr ' ' '\n' <<<"$*" | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

# timed VAR CMD...: runs CMD (output to the log), appends its wall time (ns) to the array VAR;
# skipped once VAR's first run was slower than $SLOW s
timed() {
  local -n acc=$1; shift
  if [ "${#acc[@]}" -ge 1 ] && [ "${acc[0]}" -gt $((SLOW * 1000000000)) ]; then return 0; fi
  sync; echo 3 >/proc/sys/vm/drop_caches
  local t0 t1
  t0=$(now_ns)
  "$@" >>"$WORK/log" 2>&1 || die "failed: $* (see $WORK/log)"
  t1=$(now_ns)
  acc+=($((t1 - t0)))
  log "  $(secs $((t1 - t0))) s  $*"
}

op_ours_backup() { rm -f "$2"; timeout -k 5 "$OURS_TIMEOUT" node "$ROOT/bin/imgbackup.js" -q "$1" "$2"; }
op_e2image_ra()  { rm -f "$2"; e2image -ra "$1" "$2"; }
op_e2image_q()   { rm -f "$2"; e2image -Q "$1" "$2"; }
op_ours_ls()     { timeout -k 5 "$OURS_TIMEOUT" node "$ROOT/bin/imgmount.js" "$1" "$2" && ls "$2" >/dev/null; }
op_loop_ls()     { mount -o ro,loop,noload "$1" "$2" && ls "$2" >/dev/null; }
op_fuse2fs_ls()  { fuse2fs -o ro "$1" "$2" >/dev/null && ls "$2" >/dev/null; }
unmount_ours()   { node "$ROOT/bin/imgmount.js" -u "$1" >>"$WORK/log" 2>&1 || unmount_path "$1"; }

# the tree: FILES_MB of files, 400 small ones and the rest in files of up to 4 MB (random bytes:
# nothing compresses); every size is computed, never open-ended (head -c of a negative count
# would copy /dev/urandom without end)
make_tree() {
  local t=$1 i n left
  mkdir -p "$t/big"
  for ((i = 0; i < 400; i++)); do
    mkdir -p "$t/small/d$((i % 20))"
    head -c $(( (i * 7919) % 16384 + 100 )) /dev/urandom >"$t/small/d$((i % 20))/s$i.txt"
  done
  left=$(( FILES_MB * 1000000 - $(du -sb "$t" | cut -f1) ))
  for ((i = 0; left > 0; i++)); do
    n=$(( left < 4000000 ? left : 4000000 ))
    head -c "$n" /dev/urandom >"$t/big/f$i.bin"
    left=$(( left - n ))
  done
}

ROWS_MD=()
bench_size() {
  local size=$1 vol=$WORK/vol-$1.img img=$WORK/ours-$1.imgm e2i=$WORK/e2i-$1.raw e2q=$WORK/e2i-$1.qcow2
  step "$size sparse ext4 volume, $FILES_MB MB of files"
  rm -f "$vol"; truncate -s "$size" "$vol"
  mke2fs -q -F -t ext4 -E lazy_itable_init=1,lazy_journal_init=1 -d "$WORK/tree" "$vol"
  local bc; bc=$(dumpe2fs -h "$vol" 2>/dev/null | awk -F: '/^Block count/ { gsub(/ /, "", $2); print $2 }')
  log "  block count $bc, source allocates $(mb "$(alloc_bytes "$vol")")"

  local t_ours=() t_ra=() t_q=() i
  for ((i = 1; i <= RUNS; i++)); do
    timed t_ours op_ours_backup "$vol" "$img"
    timed t_ra op_e2image_ra "$vol" "$e2i"
    timed t_q op_e2image_q "$vol" "$e2q"
  done
  local img_bytes hdr e2i_alloc e2q_bytes
  img_bytes=$(stat -c %s "$img")
  hdr=$(node "$ROOT/bin/imginfo.js" --json "$img" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).headerBytes)')
  e2i_alloc=$(alloc_bytes "$e2i")
  e2q_bytes=$(stat -c %s "$e2q")
  rm -f "$e2i" "$e2q"

  local m=$MNT/$size l_ours=() l_loop=() l_f2f=()
  mkdir -p "$m"
  for ((i = 1; i <= RUNS; i++)); do
    rm -rf "$XDG_CACHE_HOME"
    timed l_ours op_ours_ls "$img" "$m"; unmount_ours "$m"
    timed l_loop op_loop_ls "$vol" "$m"; unmount_path "$m"
    if [ "$HAVE_FUSE2FS" = 1 ]; then timed l_f2f op_fuse2fs_ls "$vol" "$m"; unmount_path "$m"; fi
  done

  local b_ours b_ra ls_ours ls_loop ls_f2f='' n_ra=${#t_ra[@]}
  b_ours=$(median "${t_ours[@]}"); b_ra=$(median "${t_ra[@]}")
  ls_ours=$(median "${l_ours[@]}"); ls_loop=$(median "${l_loop[@]}")
  [ "$HAVE_FUSE2FS" = 1 ] && ls_f2f=$(median "${l_f2f[@]}")
  mark() { awk -v v="$1" -v l="$2" 'BEGIN { print (v <= l ? "✓" : "✗") }'; }
  ROWS_MD+=("| $size | image size | $(mb "$img_bytes") (header $(mb "$hdr") + data) | e2image -ra allocates $(mb "$e2i_alloc") | $(ratio "$img_bytes" "$e2i_alloc")× ($(ratio $((img_bytes - hdr)) "$e2i_alloc")× without the header) | image ≤ 1.2× e2image + header $(mark "$img_bytes" "$(awk -v a="$e2i_alloc" -v h="$hdr" 'BEGIN { print 1.2 * a + h }')") |")
  ROWS_MD+=("| $size | header | $(mb "$hdr") | e2image -Q $(mb "$e2q_bytes") | $(ratio "$hdr" "$e2q_bytes")× | ≤ 2× $(mark "$(ratio "$hdr" "$e2q_bytes")" 2) |")
  ROWS_MD+=("| $size | backup time | $(secs "$b_ours") s (n=${#t_ours[@]}) | e2image -ra $(secs "$b_ra") s (n=$n_ra) | $(ratio "$b_ours" "$b_ra")× | ≤ 1.0× $(mark "$(ratio "$b_ours" "$b_ra")" 1) |")
  ROWS_MD+=("| $size | mount → first ls | imgmount $(secs "$ls_ours") s (n=${#l_ours[@]}) | loop $(secs "$ls_loop") s${ls_f2f:+, fuse2fs $(secs "$ls_f2f") s} | $(ratio "$ls_ours" "$ls_loop")× loop | ≤ 1 s $(mark "$(secs "$ls_ours")" 1) |")
  HDR_BY_SIZE+=("$size $bc $hdr")
  rm -f "$vol" "$img"
}

main() {
  rm -rf "$WORK"; mkdir -p "$WORK" "$MNT"; : >"$WORK/log"
  local load0; load0=$(cut -d' ' -f1-3 /proc/loadavg)
  local t0; t0=$(now_ns)
  make_tree "$WORK/tree"
  log "tree: $(find "$WORK/tree" -type f | wc -l) files, $(du -sb "$WORK/tree" | cut -f1) bytes"
  HDR_BY_SIZE=()
  for s in $SIZES; do bench_size "$s"; done
  {
    echo "# imgmount scale bench: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Sparse ext4 volumes (mke2fs -t ext4 -E lazy_itable_init=1 -d TREE; $(find "$WORK/tree" -type f | wc -l) files, $(mb "$(du -sb "$WORK/tree" | cut -f1)")) on /dev/shm;"
    echo "median of up to $RUNS interleaved runs (n given; a run over ${SLOW} s is not repeated), caches dropped before each."
    echo
    echo "| volume | row | ours | peer | ratio | target |"
    echo "| --- | --- | --- | --- | ---: | --- |"
    printf '%s\n' "${ROWS_MD[@]}"
    echo
    if [ "${#HDR_BY_SIZE[@]}" -ge 2 ]; then
      read -r s1 b1 h1 <<<"${HDR_BY_SIZE[0]}"; read -r s2 b2 h2 <<<"${HDR_BY_SIZE[-1]}"
      echo "Header growth with the volume (same files): $(awk -v h1="$h1" -v h2="$h2" -v b1="$b1" -v b2="$b2" \
        'BEGIN { printf "%.2f MB per TiB", (h2 - h1) / ((b2 - b1) * 4096 / 2^40) / 1e6 }') ($s1 → $s2)."
    fi
    echo "Machine: $(nproc) cores, kernel $(uname -r); load average at start / end: $load0 / $(cut -d' ' -f1-3 /proc/loadavg)" \
         "(above $(nproc): other jobs were running, times are inflated). Duration $(secs $(( $(now_ns) - t0 ))) s."
  } | tee "$RESULTS"
  log "saved $RESULTS"
}

main "$@"
