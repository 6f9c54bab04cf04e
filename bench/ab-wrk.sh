#!/usr/bin/env bash
# A/B two builds of the server with wrk, alternating, same machine, same run: unique /predict bodies.
# Prints req/s and the server's CPU per request (user+system of the whole process, worker threads
# included), which is steadier than req/s on a shared 2-core machine.
# Usage: bench/ab-wrk.sh DIR_A DIR_B [rounds] [seconds]   (each DIR holds a built dist/ and node_modules/)
# Env: SERVER_ENV (extra env for both servers, default "AUDIT=off"), CONNECTIONS (100).
set -euo pipefail
a=$1 b=$2 rounds=${3:-4} secs=${4:-8}
here=$(cd "$(dirname "$0")" && pwd)
port=18200
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {
  local dir=$1
  (cd "$dir" && exec env PORT=$port ${SERVER_ENV:-AUDIT=off} node dist/src/node/main.js >/tmp/ab-server.log 2>&1) &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "localhost:$port/health/ready" >/dev/null && break; sleep 0.1; done
  wrk -t1 -c"${CONNECTIONS:-100}" -d2s -s "$here/wrk/unique-predict.lua" "http://127.0.0.1:$port" >/dev/null
  local before out after
  before=$(cpu "$pid")
  out=$(wrk -t1 -c"${CONNECTIONS:-100}" -d"${secs}s" -s "$here/wrk/unique-predict.lua" "http://127.0.0.1:$port")
  after=$(cpu "$pid")
  kill -TERM "$pid"
  wait "$pid" || true
  local requests rps
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  echo "$rps req/s, $(( (after - before) * 1000000 / tick / requests )) µs CPU/req"
}
for r in $(seq 1 "$rounds"); do
  echo "round $r  A: $(run "$a")  B: $(run "$b")"
done
