#!/usr/bin/env bash
# bench-ingress.sh: baregate's ingress proxy against nginx and HAProxy as reverse proxies to the same
# backend, on loopback, one run, same wrk settings. Each proxy is pinned to CPU 1 with one worker; wrk
# and the backend share CPU 0. Prints a Markdown table with ratios to nginx.
# Usage: hack/bench-ingress.sh [duration, default 10s] [connections, default 64]
# The backend is nginx as a minimal static responder (the small response from memory, the 64 KiB file
# through its open-file cache), so that CPU 0 has room to spare and the proxy on CPU 1 is what limits
# req/s; with nginx opening and reading a file per request, CPU 0 saturated first and the ratios
# measured the load generator. All three proxies send the backend the same forwarding fields
# (X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP, Host with its port), as ingress-nginx does.
# With PERF=1 each measured run is also counted by perf stat on the proxy's process (the nginx and
# HAProxy workers, baregate's whole process): instructions and CPU time per request, which the load
# on a shared machine does not change the way it changes req/s.
set -euo pipefail
DUR=${1:-10s}
CONNS=${2:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
tools="nginx haproxy wrk openssl taskset"
[ -z "${PERF:-}" ] || tools="$tools perf"
for t in $tools; do
	command -v $t >/dev/null || { echo "missing $t (make bench-deps)" >&2; exit 1; }
done
# A second run at the same time would measure the first one's servers.
for port in 18081 18082 18083 18084 18444 18445 18446; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		echo "port $port is in use (another bench-ingress.sh run?)" >&2
		exit 1
	fi
done
DIR=$(mktemp -d /tmp/bench-ingress.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
mkdir -p "$DIR/www" "$DIR/tmp"
chmod 755 "$DIR" "$DIR/www"
head -c 65536 /dev/urandom >"$DIR/www/64k"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench.example.com \
	-days 1 -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
cat "$DIR/cert.pem" "$DIR/key.pem" >"$DIR/combined.pem"

common="daemon off; pid PIDFILE; error_log $DIR/ERRLOG warn; worker_processes 1;
events { worker_connections 8192; }"
temps="access_log off; client_body_temp_path $DIR/tmp/b; proxy_temp_path $DIR/tmp/p; fastcgi_temp_path $DIR/tmp/f; uwsgi_temp_path $DIR/tmp/u; scgi_temp_path $DIR/tmp/s;"

cat >"$DIR/backend.conf" <<CONF
${common//PIDFILE/$DIR/backend.pid}
http { $temps keepalive_requests 1000000; open_file_cache max=64 inactive=1h; open_file_cache_valid 1h;
  server { listen 127.0.0.1:18081 backlog=4096; root $DIR/www; default_type application/octet-stream;
    location = /small { return 200 "ok\\n"; } }
}
CONF
sed -i "s/ERRLOG/backend.err/" "$DIR/backend.conf"

cat >"$DIR/nginx.conf" <<CONF
${common//PIDFILE/$DIR/nginx.pid}
http { $temps keepalive_requests 1000000;
  upstream be { server 127.0.0.1:18081; keepalive 256; }
  server {
    listen 127.0.0.1:18082 backlog=4096;
    listen 127.0.0.1:18444 ssl http2 backlog=4096;
    ssl_certificate $DIR/cert.pem; ssl_certificate_key $DIR/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Real-IP \$remote_addr; proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host; proxy_set_header X-Forwarded-Port \$server_port;
    }
  }
}
CONF
sed -i "s/ERRLOG/nginx.err/" "$DIR/nginx.conf"

cat >"$DIR/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind 127.0.0.1:18083
  bind 127.0.0.1:18445 ssl crt $DIR/combined.pem alpn h2,http/1.1
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  default_backend b
backend b
  server s1 127.0.0.1:18081
CONF

(cd "$ROOT" && go build -o "$DIR/benchproxy" ./ingress/internal/benchproxy)

taskset -c 0 nginx -p "$DIR/" -c "$DIR/backend.conf" & PIDS+=($!)
taskset -c 1 nginx -p "$DIR/" -c "$DIR/nginx.conf" & PIDS+=($!)
NGINX_PID=$!
taskset -c 1 haproxy -db -f "$DIR/haproxy.cfg" 2>"$DIR/haproxy.err" & PIDS+=($!)
HAPROXY_PID=$!
taskset -c 1 "$DIR/benchproxy" -http 127.0.0.1:18084 -https 127.0.0.1:18446 -backends 127.0.0.1:18081 & PIDS+=($!)
BAREGATE_PID=$!
for port in 18081 18082 18083 18084 18444 18445 18446; do
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

# serving PROXY -> the pid doing the proxy's work (nginx's worker, not its master)
serving() {
	case $1 in
	nginx) pgrep -P "$NGINX_PID" | head -1 ;;
	haproxy) echo "$HAPROXY_PID" ;;
	baregate) echo "$BAREGATE_PID" ;;
	esac
}

# run URL [PID] -> "req/s p50 p99 instructions/req cpu-us/req" (latencies in ms; the last two "-"
# without PERF or PID)
run() {
	local perfout=$DIR/perf.out perfpid=""
	rm -f "$perfout"
	if [ -n "${PERF:-}" ] && [ -n "${2:-}" ]; then
		perf stat -x, -e instructions,task-clock -p "$2" -o "$perfout" 2>/dev/null & perfpid=$!
		sleep 0.2
	fi
	local out
	out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"$DUR" --latency "$1")
	if [ -n "$perfpid" ]; then
		kill -INT "$perfpid"
		wait "$perfpid" 2>/dev/null || true
	fi
	local ins=- cpu=-
	if [ -s "$perfout" ]; then
		ins=$(awk -F, '$3 ~ /^instructions/ { print $1 }' "$perfout")
		cpu=$(awk -F, '$3 ~ /^task-clock/ { print $1 }' "$perfout") # ms
	fi
	echo "$out" | awk -v ins="$ins" -v cpu="$cpu" '
		function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
		/requests in/ { n=$1 } /Requests\/sec/ { rps=$2 } / 50%/ { p50=ms($2) } / 99%/ { p99=ms($2) }
		/Non-2xx|Socket errors/ { err=err $0 ";" }
		END {
			ipr="-"; cpr="-"
			if (ins != "-" && ins ~ /^[0-9]/ && n > 0) ipr=sprintf("%.0f", ins/n)
			if (cpu != "-" && cpu ~ /^[0-9]/ && n > 0) cpr=sprintf("%.1f", cpu*1000/n)
			printf "%.0f %.2f %.2f %s %s %s\n", rps, p50, p99, ipr, cpr, err
		}'
}

echo "| case | proxy | req/s | p50 ms | p99 ms | req/s vs nginx | p99 vs nginx | instr/req | CPU µs/req |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for scheme in http https; do
	for path in small 64k; do
		declare -A rps=() p99=()
		for proxy in nginx haproxy baregate; do
			case $proxy/$scheme in
			nginx/http) port=18082 ;; haproxy/http) port=18083 ;; baregate/http) port=18084 ;;
			nginx/https) port=18444 ;; haproxy/https) port=18445 ;; baregate/https) port=18446 ;;
			esac
			run "$scheme://127.0.0.1:$port/$path" >/dev/null # warm up connections and caches
			read -r r p50 p9 ipr cpr err < <(run "$scheme://127.0.0.1:$port/$path" "$(serving $proxy)")
			rps[$proxy]=$r p99[$proxy]=$p9
			ratio=$(awk -v a="$r" -v b="${rps[nginx]}" 'BEGIN { printf "%.2fx", a/b }')
			pratio=$(awk -v a="$p9" -v b="${p99[nginx]}" 'BEGIN { printf "%.2fx", a/b }')
			echo "| $scheme $path | $proxy | $r | $p50 | $p9 | $ratio | $pratio | $ipr | $cpr |${err:+ errors: $err}"
		done
	done
done
