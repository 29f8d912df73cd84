# scripts/bench.d/lib.sh: helpers for scripts/bench (sourced, not run).
#
# Globals set by scripts/bench before use:
#   ROOT WORK LOGDIR LOG ROWS META RUNS OURS_TIMEOUT
#   SRC_STAT   /sys/block/loopN/stat of the source disk (the read counters)
#   BENCH_RUN_ID (exported: marks our processes), XDG_CACHE_HOME (exported: our tools' cache)

# ---------------------------------------------------------------- messages
log()  { printf '%s\n' "$*" >&2; }
step() { printf '\n== %s\n' "$*" >&2; }
die()  { log "bench: error: $*"; exit 1; }

# one_line TEXT: TEXT without tabs/newlines (safe for one TSV field), at most 160 chars
one_line() {
  local s=${1//$'\t'/ }
  s=${s//$'\r'/ }; s=${s//$'\n'/ }
  printf '%s' "${s:0:160}"
}

# meta KEY VALUE: record one key/value for the report (the last value of a key wins)
meta() { printf '%s\t%s\n' "$1" "$(one_line "$2")" >>"$META"; }

# ---------------------------------------------------------------- our tools
# ours SCRIPT ARGS...: run node bin/SCRIPT with a time limit (our tools are work in progress;
# a hang must not stall the bench). Exit 124 = timed out.
ours() {
  local js=$1; shift
  timeout -k 5 "$OURS_TIMEOUT" node "$ROOT/bin/$js" "$@"
}

# ---------------------------------------------------------------- counters and caches
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# read_counters: sets RD_REQS (completed reads) and RD_BYTES (sectors read x 512) of the source disk
read_counters() {
  local -a f
  read -r -a f <"$SRC_STAT"
  RD_REQS=${f[0]}
  RD_BYTES=$(( f[2] * 512 ))
}

# alloc_bytes PATH: allocated bytes of the regular files in PATH (a file or a tree); sparse
# files count what is allocated, directories don't count
alloc_bytes() { find "$1" -type f -printf '%b\n' 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s * 512 }'; }

# fresh_dir DIR: empty directory DIR
fresh_dir() { rm -rf "$1" && mkdir -p "$1"; }

# human BYTES: 1.5 GiB / 12.3 MiB / 76 KiB (for progress lines; the report does its own)
human() {
  awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u, " "); i = 1
    while (b >= 1024 && i < 5) { b /= 1024; i++ }
    printf(i == 1 ? "%d %s" : "%.1f %s", b, u[i]) }'
}

# ---------------------------------------------------------------- result checks
# A post hook may call check ok|bad TEXT to attach a verification result to the current row.
check() {
  if [ "$1" = bad ]; then ROW_CHECK_BAD=$2; else ROW_CHECK_OK=$2; fi
}

# ---------------------------------------------------------------- rows
# record ID SECTION TOOL OPERATION STATUS TIMES_NS BYTES REQS OUT_BYTES NOTE
#   STATUS: ok | na (our tool missing/failing) | fail (a peer failed: a bench bug)
#   TIMES_NS, BYTES, REQS: comma-separated per-run values
record() {
  local f out=()
  for f in "$@"; do out+=("$(one_line "$f")"); done
  (IFS=$'\t'; printf '%s\n' "${out[*]}") >>"$ROWS"
}

# last_words LOG: why a command failed: the last line mentioning an error among the last 5
# lines of LOG (run markers aside), else the last line
last_words() {
  local tail5
  tail5=$(grep -v '^--- run ' "$1" | tail -n 5)
  grep -i -m 1 -e 'error' -e 'cannot' -e 'failed' <<<"$(tac <<<"$tail5")" || tail -n 1 <<<"$tail5"
}

# row_field ID N: field N (1-based, see record) of the recorded row ID
row_field() { awk -F'\t' -v id="$1" -v n="$2" '$1 == id { print $n }' "$ROWS"; }

# measure ID SECTION TOOL OPERATION [options] -- COMMAND ARGS...
#   Runs COMMAND $RUNS times. Each run: PRE hook; sync + drop caches; read the source disk's
#   counters; time COMMAND (wall clock, date +%s%N); read the counters again; POST hook.
#   COMMAND runs in this shell (it may be a function); its output goes to $LOGDIR/ID.log.
#   (fd 9, the bench's lock, is closed for hooks and commands: daemons must not inherit it)
# Options:
#   --ours        one of our tools: a missing file or a failure gives an "n/a (reason)" row;
#                 $XDG_CACHE_HOME (our tools' header cache) is emptied before each run
#   --keep-cache  with --ours: keep $XDG_CACHE_HOME (warm header cache)
#   --need PATH   n/a (or fail) without running when PATH does not exist (repeatable)
#   --pre CODE    eval'd before each run, untimed (e.g. mount); failure ends the row
#   --post CODE   eval'd after each run, untimed, also after a failure (e.g. unmount, check)
#                 RUN_I / RUN_N tell the hooks which run this is
#   --out PATH    "out size" = allocated bytes of PATH after the last run
#   --note TEXT   note for the report
measure() {
  local id=$1 section=$2 tool=$3 op=$4; shift 4
  local is_ours=0 keep_cache=0 pre=: post=: out='' note='' need=()
  while [ $# -gt 0 ]; do
    case $1 in
      --ours) is_ours=1 ;;
      --keep-cache) keep_cache=1 ;;
      --need) need+=("$2"); shift ;;
      --pre)  pre=$2; shift ;;
      --post) post=$2; shift ;;
      --out)  out=$2; shift ;;
      --note) note=$2; shift ;;
      --) shift; break ;;
      *) die "measure $id: unknown option $1" ;;
    esac
    shift
  done
  [ $# -gt 0 ] || die "measure $id: no command"

  local bad_status=fail; [ "$is_ours" = 1 ] && bad_status=na
  local p
  for p in "${need[@]}"; do
    if [ ! -e "$p" ]; then
      log "  $id: $bad_status (missing ${p#"$ROOT"/})"
      record "$id" "$section" "$tool" "$op" "$bad_status" "" "" "" "" "missing ${p#"$ROOT"/}"
      [ "$bad_status" = fail ] && PEER_FAILURES=$((PEER_FAILURES + 1))
      return 0
    fi
  done

  local cmdlog=$LOGDIR/$id.log
  : >"$cmdlog"
  local times=() bytes=() reqs=() status=ok reason='' rc t0 t1 r0 b0
  ROW_CHECK_OK='' ROW_CHECK_BAD=''
  RUN_N=$RUNS
  for ((RUN_I = 1; RUN_I <= RUNS; RUN_I++)); do
    echo "--- run $RUN_I: $*" >>"$cmdlog"
    if [ "$is_ours" = 1 ] && [ "$keep_cache" = 0 ]; then rm -rf "$XDG_CACHE_HOME"; fi
    if ! eval "$pre" >>"$cmdlog" 2>&1 9>&-; then
      status=$bad_status reason="setup failed: $(last_words "$cmdlog")"
      eval "$post" >>"$cmdlog" 2>&1 9>&- || true
      break
    fi
    drop_caches
    read_counters; r0=$RD_REQS b0=$RD_BYTES
    t0=$(date +%s%N)
    if "$@" >>"$cmdlog" 2>&1 9>&-; then rc=0; else rc=$?; fi
    t1=$(date +%s%N)
    read_counters
    if [ "$rc" -ne 0 ]; then       # the reason is the command's last words, not the post hook's
      status=$bad_status
      if [ "$rc" = 124 ]; then reason="timed out after ${OURS_TIMEOUT}s"
      else reason="exit $rc: $(last_words "$cmdlog")"; fi
    fi
    eval "$post" >>"$cmdlog" 2>&1 9>&- || true
    [ "$rc" -eq 0 ] || break
    times+=($((t1 - t0))) bytes+=($((RD_BYTES - b0))) reqs+=($((RD_REQS - r0)))
    log "  $id run $RUN_I/$RUNS: $(awk -v t=$((t1 - t0)) 'BEGIN{printf "%.3f s", t/1e9}')," \
        "read $(human $((RD_BYTES - b0))) in $((RD_REQS - r0)) reqs"
  done

  local out_bytes=''
  if [ "$status" = ok ] && [ -n "$out" ] && [ -e "$out" ]; then out_bytes=$(alloc_bytes "$out"); fi
  if [ -n "$ROW_CHECK_BAD" ]; then
    note="${note:+$note; }CHECK FAILED: $ROW_CHECK_BAD"
    [ "$is_ours" = 1 ] || PEER_FAILURES=$((PEER_FAILURES + 1))
  elif [ -n "$ROW_CHECK_OK" ]; then
    note="${note:+$note; }$ROW_CHECK_OK"
  fi
  if [ "$status" != ok ]; then
    log "  $id: $status ($reason)"
    note=$reason
    [ "$status" = fail ] && PEER_FAILURES=$((PEER_FAILURES + 1))
  fi
  local IFS=,
  record "$id" "$section" "$tool" "$op" "$status" "${times[*]}" "${bytes[*]}" "${reqs[*]}" \
         "$out_bytes" "$note"
}

# ---------------------------------------------------------------- mounts
is_mounted() { findmnt -rn --mountpoint "$1" >/dev/null 2>&1; }

# wait_unmounted MNT: up to ~5 s for MNT to disappear from the mount table
wait_unmounted() {
  local i
  for ((i = 0; i < 50; i++)); do is_mounted "$1" || return 0; sleep 0.1; done
  return 1
}

# unmount_path MNT: umount, then lazy umount as a last resort
unmount_path() {
  is_mounted "$1" || return 0
  umount "$1" 2>/dev/null || fusermount -u "$1" 2>/dev/null || true
  wait_unmounted "$1" || { umount -l "$1" 2>/dev/null || true; wait_unmounted "$1"; }
}

# daemon_pids MNT: pids of the processes serving our mount at MNT. Only processes started by
# this bench qualify (they inherit BENCH_RUN_ID in their environment; other people's processes
# don't), and only those whose command line names MNT, our image or imgmount; never this shell,
# its helpers, or a "-u" unmount command.
daemon_pids() {
  local d pid comm args
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
    grep -qzx "BENCH_RUN_ID=$BENCH_RUN_ID" "$d/environ" 2>/dev/null || continue
    comm=$(cat "$d/comm" 2>/dev/null) || continue
    case $comm in bash|sh|tee|timeout|pgrep|sort|cat|awk|grep|sleep) continue ;; esac
    args=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
    case $args in *" -u "*) continue ;; esac
    case $args in *"$1"*|*"${OURS_IMG:-/nonexistent}"*|*imgmount*) echo "$pid" ;; esac
  done
}

# proc_start PID: the process's start time (field 22 of /proc/PID/stat); pid + start time
# identify a process even if the pid is reused later
proc_start() { awk '{sub(/^.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }

# track_daemons MNT: remember our daemons (pid + start time) so that cleanup can end exactly these
track_daemons() {
  local pid
  for pid in $(daemon_pids "$1"); do
    echo "$pid $(proc_start "$pid")" >>"$WORK/daemon.pids"
  done
}

# daemon_rss_kb MNT: largest VmRSS (KiB) among our daemons for MNT; prints "KB PID COMM" or nothing
daemon_rss_kb() {
  local pid kb best=0 bpid='' bcomm=''
  for pid in $(daemon_pids "$1"); do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
    [ -n "$kb" ] && [ "$kb" -gt "$best" ] && { best=$kb; bpid=$pid; bcomm=$(cat "/proc/$pid/comm"); }
  done
  [ -n "$bpid" ] && echo "$best $bpid $bcomm"
  return 0
}

# release_work: unmount everything under $WORK and detach loop devices backed by files under
# $WORK (used at start, for leftovers of an interrupted run, and by the exit trap)
release_work() {
  local m dev back i
  # 1. tool mounts (FUSE and loop) first: their daemons/loops read from the source disk
  for m in $(findmnt -rn -o TARGET | grep -F "$WORK/mnt/" | sort -r); do unmount_path "$m"; done
  # 2. loop devices on files of the source disk (mount -o loop of vol.img, --kernel helpers)
  losetup -n -l -O NAME,BACK-FILE 2>/dev/null | while read -r dev back; do
    case $back in "$WORK/src/"*) losetup -d "$dev" 2>/dev/null || true ;; esac
  done
  # 3. any other mount under $WORK, the source disk's fs last
  for m in $(findmnt -rn -o TARGET | grep -F "$WORK/" | grep -vxF "$WORK/src" | sort -r); do
    unmount_path "$m"
  done
  for ((i = 0; i < 20; i++)); do
    is_mounted "$WORK/src" || break
    umount "$WORK/src" 2>/dev/null || sleep 0.25
  done
  is_mounted "$WORK/src" && { umount -l "$WORK/src" 2>/dev/null || true; }
  # 4. the source disk's loop device
  losetup -n -l -O NAME,BACK-FILE 2>/dev/null | while read -r dev back; do
    case $back in "$WORK/"*) losetup -d "$dev" 2>/dev/null || true ;; esac
  done
  return 0
}

# end_tracked_daemons: SIGTERM the daemons we saw serving our mounts, by pid, if still alive
# (same pid and same start time)
end_tracked_daemons() {
  local pid start
  [ -f "$WORK/daemon.pids" ] || return 0
  sort -u "$WORK/daemon.pids" | while read -r pid start; do
    if [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ]; then
      log "bench: ending leftover daemon $pid ($(cat "/proc/$pid/comm" 2>/dev/null))"
      kill "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$WORK/daemon.pids"
}
