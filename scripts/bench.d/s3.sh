#!/usr/bin/env bash
# scripts/bench.d/s3.sh (bash scripts/bench --s3): the standard volume's image in RGW (scripts/rgw),
# read through the delaying proxy (test/helpers/delay-proxy.ts) at 0 and 20 ms per request and per
# answer, against the peers on the same proxy: the `e2image -ra` raw image in the same bucket
# mounted with `rclone mount` and loop-mounted, and `restic mount` of a restic repository of the
# volume in the same RGW. Rows: mount -> first ls (requests, time), find + stat of the whole
# tree (requests, time), cp of the 100 MiB file (time, MiB/s), our tagged restore of one small
# file (requests). Requests are counted by the proxy. Page cache dropped before each timed step;
# our mounts start with an empty cache dir (cold header). One run (BENCH_RUNS is not used).
# Environment: BENCH_DIR (default <project>/.bench; work in BENCH_DIR/s3), BENCH_S3_DELAYS
# (default "0 20"), BENCH_SHARED (make-volume.sh), BENCH_S3_PEERS=0 (our rows only). Needs root, FUSE, loop devices.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${BENCH_DIR:-$ROOT/.bench}/s3
SHARED=${BENCH_SHARED:-/work/shared/bench}
DELAYS=${BENCH_S3_DELAYS:-"0 20"}
BUCKET=imgmount-bench
[ "$(id -u)" = 0 ] || { echo "s3.sh: needs root" >&2; exit 1; }
mkdir -p "$WORK"
log() { printf '%s\n' "$*" >&2; }
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
need=()
command -v rclone >/dev/null || need+=(rclone)
command -v restic >/dev/null || need+=(restic)
command -v e2image >/dev/null || need+=(e2fsprogs)
[ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# plain-http clients break on CA bundles meant for other endpoints: give the peers a clean env
unset AWS_CA_BUNDLE SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS || true
eval "$(bash "$ROOT/scripts/rgw" start)"
RGW=$AWS_ENDPOINT_URL
OURS="node $ROOT/bin"

VOL=${BENCH_S3_VOLUME:-$WORK/vol.img}
[ -f "$VOL" ] || "$SHARED/make-volume.sh" 2048 50 "$VOL" >&2
IMG=$WORK/vol.imgm RAW=$WORK/raw.img
[ -f "$IMG" ] || $OURS/imgbackup.js -q -f "$VOL" "$IMG"
[ -f "$RAW" ] || e2image -ra "$VOL" "$RAW"
VM=$WORK/volmnt; mkdir -p "$VM"
mountpoint -q "$VM" || mount -o loop,ro "$VOL" "$VM"
MOUNTS=()
cleanup() {
  set +e
  for m in "${MOUNTS[@]}"; do mountpoint -q "$m" && { umount "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null || umount -l "$m"; }; done
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null
  [ -n "${RESTIC_PID:-}" ] && kill "$RESTIC_PID" 2>/dev/null
  umount "$VM" 2>/dev/null
}
trap cleanup EXIT
BIG=$(cd "$VM" && find . -type f -size +99M -size -101M | head -1 || true); BIG=${BIG#./}
SMALL=$(cd "$VM" && find . -type f -size -8k | sort | head -1 || true); SMALL=${SMALL#./}
log "big file: $BIG; small file: $SMALL"

upload() { # FILE KEY: unless the object is there with that size
  local size; size=$(stat -c %s "$1")
  if ! node --input-type=module -e "
    const { S3Client } = await import('$ROOT/dist/src/io/s3/index.js'); const c = new S3Client();
    const h = await c.head({ kind: 's3', bucket: '$BUCKET', key: '$2' }).catch(() => undefined); c.destroy();
    process.exit(h && h.sizeBytes === $size ? 0 : 1);"; then
    log "uploading $1 to s3://$BUCKET/$2"; node "$ROOT/dist/test/helpers/s3-upload.js" "$1" "s3://$BUCKET/$2"
  fi
}
upload "$IMG" vol.imgm
upload "$RAW" raw.img
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache
REPO="s3:$RGW/$BUCKET-restic"
if ! restic -r "$REPO" cat config >/dev/null 2>&1; then
  log "restic repository of the volume"
  restic -r "$REPO" init >/dev/null
  restic -r "$REPO" backup --host bench -q "$VM" >/dev/null
fi

ROWS=$WORK/rows.tsv; : >"$ROWS"
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$ROWS" >&2; } # delay tool step ms requests

for D in $DELAYS; do
  COUNT=$WORK/count.$D; rm -f "$COUNT"
  COUNT_FILE=$COUNT node "$ROOT/dist/test/helpers/delay-proxy.js" 0 "${RGW#http://}" "$D" >"$WORK/proxy.out" &
  PROXY_PID=$!
  for _ in $(seq 100); do grep -q listening "$WORK/proxy.out" 2>/dev/null && break; sleep 0.1; done
  EP=http://127.0.0.1:$(awk '/listening/ { print $2 }' "$WORK/proxy.out")
  reqs() { cat "$COUNT" 2>/dev/null || echo 0; }

  # ours
  M=$WORK/m-ours; mkdir -p "$M"; MOUNTS+=("$M"); C=$WORK/cache-ours; rm -rf "$C"
  cold; r0=$(reqs); t0=$(now)
  $OURS/imgmount.js --cache-dir "$C" --s3-endpoint "$EP" "s3://$BUCKET/vol.imgm" "$M"; ls "$M" >/dev/null
  t1=$(now); row "$D" ours "mount->ls" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cold; r0=$(reqs); t0=$(now); find "$M" -print0 | xargs -0 stat >/dev/null; t1=$(now)
  row "$D" ours "find+stat" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cold; r0=$(reqs); t0=$(now); cp "$M/$BIG" "$WORK/out.bin"; t1=$(now)
  row "$D" ours "cp 100MiB" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cmp -s "$WORK/out.bin" "$VM/$BIG" || log "ours: the copied file differs!"
  $OURS/imgmount.js --cache-dir "$C" -u "$M"
  rm -rf "$WORK/restore"; mkdir -p "$WORK/restore"
  cold; r0=$(reqs); t0=$(now)
  $OURS/imgrestore.js -q --s3-endpoint "$EP" "s3://$BUCKET/vol.imgm" -C "$WORK/restore" "$SMALL"; t1=$(now)
  row "$D" ours "restore 1 small" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cmp -s "$WORK/restore/$SMALL" "$VM/$SMALL" || log "ours: the restored file differs!"

  if [ "${BENCH_S3_PEERS:-1}" = 1 ]; then
  # rclone mount + loop
  RM=$WORK/m-rclone LM=$WORK/m-loop; mkdir -p "$RM" "$LM"; MOUNTS+=("$LM" "$RM")
  export RCLONE_CONFIG_RGW_TYPE=s3 RCLONE_CONFIG_RGW_PROVIDER=Ceph RCLONE_CONFIG_RGW_ENDPOINT=$EP RCLONE_CONFIG_RGW_FORCE_PATH_STYLE=true \
    RCLONE_CONFIG_RGW_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY RCLONE_CONFIG_RGW_REGION=$AWS_REGION
  cold; r0=$(reqs); t0=$(now)
  rclone mount "rgw:$BUCKET" "$RM" --read-only --daemon --vfs-cache-mode off --dir-cache-time 1h
  for _ in $(seq 300); do [ -f "$RM/raw.img" ] && break; sleep 0.05; done
  mount -o loop,ro "$RM/raw.img" "$LM"; ls "$LM" >/dev/null
  t1=$(now); row "$D" rclone+loop "mount->ls" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cold; r0=$(reqs); t0=$(now); find "$LM" -print0 | xargs -0 stat >/dev/null; t1=$(now)
  row "$D" rclone+loop "find+stat" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cold; r0=$(reqs); t0=$(now); cp "$LM/$BIG" "$WORK/out.bin"; t1=$(now)
  row "$D" rclone+loop "cp 100MiB" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cmp -s "$WORK/out.bin" "$VM/$BIG" || log "rclone+loop: the copied file differs!"
  umount "$LM"; fusermount -u "$RM"

  # restic mount
  SM=$WORK/m-restic; mkdir -p "$SM"; MOUNTS+=("$SM")
  cold; r0=$(reqs); t0=$(now)
  restic -r "s3:$EP/$BUCKET-restic" mount "$SM" >/dev/null 2>&1 &
  RESTIC_PID=$!
  for _ in $(seq 600); do [ -d "$SM/snapshots/latest$VM" ] && break; sleep 0.05; done
  ls "$SM/snapshots/latest$VM" >/dev/null
  t1=$(now); row "$D" restic "mount->ls" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cold; r0=$(reqs); t0=$(now); find "$SM/snapshots/latest$VM" -print0 | xargs -0 stat >/dev/null; t1=$(now)
  row "$D" restic "find+stat" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cold; r0=$(reqs); t0=$(now); cp "$SM/snapshots/latest$VM/$BIG" "$WORK/out.bin"; t1=$(now)
  row "$D" restic "cp 100MiB" "$(ms "$t0" "$t1")" $(( $(reqs) - r0 ))
  cmp -s "$WORK/out.bin" "$VM/$BIG" || log "restic: the copied file differs!"
  kill -INT "$RESTIC_PID"; wait "$RESTIC_PID" 2>/dev/null || true; RESTIC_PID=
  mountpoint -q "$SM" && fusermount -u "$SM"
  fi
  kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=
done
rm -f "$WORK/out.bin"

# the table, with our time as a fraction of each peer's (and cp throughput)
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t"));
const get = (d, tool, step) => rows.find((r) => r[0] === d && r[1] === tool && r[2] === step);
console.log("| delay | step | ours ms (requests) | rclone+loop ms (requests) | restic ms (requests) | ours / rclone+loop | ours / restic |");
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const d of [...new Set(rows.map((r) => r[0]))]) for (const step of ["mount->ls", "find+stat", "cp 100MiB", "restore 1 small"]) {
  const o = get(d, "ours", step), r = get(d, "rclone+loop", step), s = get(d, "restic", step);
  const cell = (x) => (x ? `${x[3]} (${x[4]})` : "-");
  const ratio = (x) => (o && x ? (step === "cp 100MiB" ? `${(Number(x[3]) / Number(o[3])).toFixed(2)}x throughput` : (Number(o[3]) / Number(x[3])).toFixed(3)) : "-");
  console.log(`| ${d} ms | ${step} | ${cell(o)} | ${cell(r)} | ${cell(s)} | ${ratio(r)} | ${ratio(s)} |`);
}' "$ROWS" | tee "$WORK/results.md"
