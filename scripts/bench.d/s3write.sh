#!/usr/bin/env bash
# scripts/bench.d/s3write.sh: imgbackup's output paths (issue 16, write side). On the standard
# volume (make-volume.sh 2048 50, or BENCH_SIZE_MB/BENCH_FILL), interleaved per run, cold page
# cache before each step, median of BENCH_RUNS (default 3), wall clock:
#   file      imgbackup VOL IMG (fsync inside)          pipe-file  imgbackup VOL - | cat > F; sync
#   pipe-null imgbackup VOL - | cat > /dev/null
#   s3-0ms / s3-20ms   imgbackup VOL s3://BUCKET/KEY through the delaying proxy (test/helpers/
#                      delay-proxy) at 0 and 20 ms per request and per answer, to the RGW of
#                      scripts/rgw (started if needed)
#   put-0ms   the finished image file uploaded through the same MultipartSink, no backup work:
#             what the engine and the client allow here (the ceiling of the s3 rows)
# Targets: pipe ≤ 1.1x file; s3 ≤ 1.3x file. The object is deleted after each run (RGW's OSD
# keeps objects in memory). Needs root (drop_caches) and a build (npm run build).
#   sudo bash scripts/bench.d/s3write.sh       (BENCH_DIR default <project>/.bench)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${BENCH_DIR:-$ROOT/.bench}/s3write
SIZE_MB=${BENCH_SIZE_MB:-2048}
FILL=${BENCH_FILL:-50}
RUNS=${BENCH_RUNS:-3}
SHARED=${BENCH_SHARED:-/work/shared/bench}
BIN="node $ROOT/dist/bundle/imgbackup.mjs"
mkdir -p "$WORK"
VOL=$WORK/vol-${SIZE_MB}M-${FILL}.img
[ -f "$VOL" ] || "$SHARED/make-volume.sh" "$SIZE_MB" "$FILL" "$VOL" >/dev/null
eval "$(bash "$ROOT/scripts/rgw" start)"
BUCKET=imgmount-bench-s3write-$$
PROXIES=()
cleanup() {
  set +e
  for p in "${PROXIES[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -f "$WORK/out.imgm" "$WORK/out.pipe"
  node -e "
    const { S3Client } = await import('$ROOT/dist/src/io/s3/index.js');
    const c = new S3Client(); const b = '$BUCKET';
    for (const o of await c.list(b, '').catch(() => [])) await c.delete({ kind: 's3', bucket: b, key: o.key });
    for (const u of await c.listMultipart(b, '').catch(() => [])) await c.abortMultipart({ kind: 's3', bucket: b, key: u.key }, u.uploadId);
    c.destroy();" --input-type=module
}
trap cleanup EXIT
# one delaying proxy per delay, on a free port chosen by the proxy
# (not in $(...): the proxy's pid must reach PROXIES, and its output must not hold our pipe)
proxy() {
  local out=$WORK/proxy-$1.out
  rm -f "$out"
  node "$ROOT/dist/test/helpers/delay-proxy.js" 0 "${AWS_ENDPOINT_URL#http://}" "$1" >"$out" 2>&1 </dev/null &
  PROXIES+=($!)
  for _ in $(seq 200); do grep -q listening "$out" 2>/dev/null && break; sleep 0.05; done
  PROXY_URL="http://127.0.0.1:$(awk '/listening/ {print $2}' "$out")"
}
proxy 0; P0=$PROXY_URL
proxy 20; P20=$PROXY_URL
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
ms() { echo $(( ($(now) - $1) / 1000000 )); }
delobj() { node -e "
    const { S3Client } = await import('$ROOT/dist/src/io/s3/index.js');
    const c = new S3Client(); await c.delete({ kind: 's3', bucket: '$BUCKET', key: 'vol.imgm' }).catch(() => {}); c.destroy();" --input-type=module; }

declare -A T
rows=(file pipe-file pipe-null s3-0ms s3-20ms put-0ms)
for _ in $(seq "$RUNS"); do
  cold; t0=$(now); $BIN -q -f "$VOL" "$WORK/out.imgm"; T[file]+=" $(ms "$t0")"
  cold; t0=$(now); $BIN -q "$VOL" - | cat >"$WORK/out.pipe"; sync; T[pipe-file]+=" $(ms "$t0")"; rm -f "$WORK/out.pipe"
  cold; t0=$(now); $BIN -q "$VOL" - | cat >/dev/null; T[pipe-null]+=" $(ms "$t0")"
  cold; t0=$(now); $BIN -q --s3-endpoint "$P0" "$VOL" "s3://$BUCKET/vol.imgm"; T[s3-0ms]+=" $(ms "$t0")"; delobj
  cold; t0=$(now); $BIN -q --s3-endpoint "$P20" "$VOL" "s3://$BUCKET/vol.imgm"; T[s3-20ms]+=" $(ms "$t0")"; delobj
  cold; t0=$(now); AWS_ENDPOINT_URL=$P0 node "$ROOT/scripts/bench.d/upload-file.mjs" "$WORK/out.imgm" "s3://$BUCKET/vol.imgm"; T[put-0ms]+=" $(ms "$t0")"; delobj
done
IMG_MB=$(( $(stat -c %s "$WORK/out.imgm") >> 20 ))
F=$(printf '%s\n' ${T[file]} | median)
echo "volume ${SIZE_MB} MiB, ${FILL}% full, image ${IMG_MB} MiB; median of $RUNS (ms); load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-10s | %8s | %8s | %s |\n' row median x-file runs
for r in "${rows[@]}"; do
  m=$(printf '%s\n' ${T[$r]} | median)
  printf '| %-10s | %8s | %8s | %s |\n' "$r" "$m" "$(awk -v a="$m" -v b="$F" 'BEGIN{printf "%.2fx", a/b}')" "${T[$r]# }"
done
