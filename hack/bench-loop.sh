#!/usr/bin/env bash
# bench-loop.sh: baregate's ingress with its event loops against the same build serving each client
# connection with a goroutine (--ingress-disable-event-loop), one after the other in one run, on
# loopback: the proxy pinned to CPU 1 (so one loop, GOMAXPROCS 1), wrk and an nginx static backend on
# CPU 0 (the small response from memory, as in bench-ingress.sh, and chunked). perf stat counts the
# proxy's CPU time and system calls per request, which the machine's load moves far less than req/s.
# Prints a Markdown table.
# Usage: hack/bench-loop.sh [duration, default 8s] [connections, default 64]
set -euo pipefail
DUR=${1:-8s}
CONNS=${2:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in nginx wrk taskset perf; do
	command -v $t >/dev/null || { echo "missing $t (make bench-deps)" >&2; exit 1; }
done
for port in 18091 18092 18093; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		echo "port $port is in use (another bench-loop.sh run?)" >&2
		exit 1
	fi
done
DIR=$(mktemp -d /tmp/bench-loop.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT
mkdir -p "$DIR/www" "$DIR/tmp"
chmod 755 "$DIR" "$DIR/www"
head -c 65536 /dev/urandom >"$DIR/www/64k"
cat >"$DIR/backend.conf" <<CONF
daemon off; pid $DIR/backend.pid; error_log $DIR/backend.err warn; worker_processes 1;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $DIR/tmp/b; proxy_temp_path $DIR/tmp/p; fastcgi_temp_path $DIR/tmp/f;
  uwsgi_temp_path $DIR/tmp/u; scgi_temp_path $DIR/tmp/s; keepalive_requests 1000000;
  open_file_cache max=64 inactive=1h; open_file_cache_valid 1h;
  server { listen 127.0.0.1:18091 backlog=4096; root $DIR/www; default_type application/octet-stream;
    location = /small { return 200 "ok\\n"; }
    # The same body, chunked (sub_filter drops the length), as dynamic backends often answer.
    location = /chunked { default_type text/plain; sub_filter_types text/plain; sub_filter zz z; return 200 "ok\\n"; } }
}
CONF
(cd "$ROOT" && go build -o "$DIR/benchproxy" ./ingress/internal/benchproxy)
taskset -c 0 nginx -p "$DIR/" -c "$DIR/backend.conf" & PIDS+=($!)

# measure URL FLAGS... -> "req/s p99-ms cpu-us/req syscalls/req epoll/req"
measure() {
	local url=$1
	shift
	taskset -c 1 "$DIR/benchproxy" -http 127.0.0.1:18092 -https 127.0.0.1:18093 -backends 127.0.0.1:18091 "$@" 2>"$DIR/proxy.err" &
	local pid=$!
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18092) 2>/dev/null && break; sleep 0.1; done
	taskset -c 0 wrk -t1 -c"$CONNS" -d3s "$url" >/dev/null # warm up connections and caches
	perf stat -x, -e task-clock,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_pwait \
		-p "$pid" -o "$DIR/perf.out" 2>/dev/null &
	local perfpid=$!
	sleep 0.2
	local out
	out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"$DUR" --latency "$url")
	kill -INT "$perfpid"
	wait "$perfpid" 2>/dev/null || true
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	local n
	n=$(echo "$out" | awk '/requests in/ { print $1 }')
	awk -F, -v n="$n" '
		$3 ~ /task-clock/ { cpu=$1 } $3 ~ /epoll_pwait/ { ep=$1 } $3 ~ /sys_enter_(read|write|sendto|recvfrom)$/ { sc+=$1 }
		END { printf "%.1f %.2f %.2f ", cpu*1000/n, sc/n, ep/n }' "$DIR/perf.out"
	echo "$out" | awk '
		function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
		/Requests\/sec/ { rps=$2 } / 99%/ { p99=ms($2) } END { printf "%.0f %.2f\n", rps, p99 }'
}

echo "| case | serving | req/s | p99 ms | CPU µs/req | read/write syscalls/req | epoll_pwait/req | CPU vs goroutines |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for url in http://127.0.0.1:18092/small http://127.0.0.1:18092/chunked http://127.0.0.1:18092/64k https://127.0.0.1:18093/small https://127.0.0.1:18093/64k; do
	case=$(echo "$url" | sed -E 's|^(https?)://[^/]*/|\1 |')
	read -r gcpu gsc gep grps gp99 < <(measure "$url" -disable-event-loop)
	read -r lcpu lsc lep lrps lp99 < <(measure "$url")
	echo "| $case | goroutines | $grps | $gp99 | $gcpu | $gsc | $gep | 1.00x |"
	echo "| $case | event loop | $lrps | $lp99 | $lcpu | $lsc | $lep | $(awk -v a="$lcpu" -v b="$gcpu" 'BEGIN { printf "%.2fx", a/b }') |"
done
