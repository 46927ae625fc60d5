package ingress

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/baregate/baregate/internal/cluster"
)

// The lanes of TestLanesMatchNetHTTP compared where that test does not go: over TLS, with a TLS
// Ingress (HSTS, redirect to HTTPS), for requests the fast path hands to net/http, for routes with
// annotations and behind a PROXY protocol header.

// TestLanesOverTLS compares a subset of the lanes' cases through the HTTPS listeners.
func TestLanesOverTLS(t *testing.T) {
	ls := startLanes(t)
	tl := ls.overTLS()
	want := map[string]bool{}
	for _, n := range []string{"GET small", "HEAD", "HEAD of a 64 KiB body", "POST with Content-Length", "POST 300 KiB body",
		"hop-by-hop from the client, TE trailers", "forwarded headers replaced", "HTTP 1.0", "HTTP 1.0 keep-alive",
		"HTTP 1.0 POST", "Connection close", "304 to a conditional GET", "204", "204 to POST", "304 with a Content-Length",
		"304 with a Content-Length to POST", "chunked response", "chunked response to POST", "chunked response with trailers",
		"64 KiB body", "64 KiB body to POST", "backend Connection lists a field", "response without length", "body cut short"} {
		want[n] = true
	}
	for _, tc := range laneCases() {
		if !want[tc.name] {
			continue
		}
		delete(want, tc.name)
		t.Run(tc.name, func(t *testing.T) {
			if diff := tl.compare(t, tc); diff != "" {
				t.Errorf("the lanes differ over TLS (-fast +net/http):\n%s", diff)
			}
		})
	}
	if len(want) > 0 {
		t.Errorf("cases not found in laneCases: %v", want)
	}
	// The proto is compared between the lanes like any field; that it is https is asserted here.
	for _, h := range []*harness{tl.fast, tl.netHTTP} {
		res := runLane(t, tl.dial(t, h), ls.be, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n", false, false)
		if len(res.backend) != 3 {
			t.Errorf("the backend received %d requests, want 3", len(res.backend))
		}
		for _, r := range res.backend {
			if !strings.Contains(r, "\nX-Forwarded-Proto: https\n") {
				t.Errorf("over TLS the backend received:\n%s\nwant X-Forwarded-Proto: https", r)
			}
		}
	}
	if served, handed := ls.fast.fastStats(); served == 0 || handed != 0 {
		t.Errorf("over TLS the fast lane served %d requests and handed %d connections to net/http, want all served", served, handed)
	}
}

// TestLanesTLSIngress compares the lanes on a host with spec.tls, where ingress-nginx's defaults
// apply: HSTS over HTTPS (the backend's own wins), 308 to https over HTTP.
func TestLanesTLSIngress(t *testing.T) {
	ls := startLanes(t)
	more := startMoreBackend(t, ls.be)
	in := merge(simple("x", "lanes", ls.be.addr), moreRoutes("x", more))
	// An annotated route of a TLS host: the policy's own handling sets HSTS and redirects.
	rewrite := pathIngress("rewrite", 1, "r.example", "ImplementationSpecific", "/r(/|$)(.*)", "lanes", nginxAnn("rewrite-target", "/$2"))
	rewrite.Spec.TLS = tlsEntries("tls", "r.example")
	in.Ingresses = append(in.Ingresses, rewrite)
	in.Ingresses[0].Spec.TLS = tlsEntries("tls", "x")
	in.Secrets = append(in.Secrets, mustCert(t, "tls-cert", "x", "r.example"))
	ls.apply(in)
	tl := ls.overTLS()
	const hsts = "Strict-Transport-Security: max-age=31536000; includeSubDomains"
	for _, tc := range []struct {
		name, req string
		https     bool
		want      string // in the response to the case, on both lanes
	}{
		{"HTTPS GET", "GET /small HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS HEAD", "HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS POST", "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", true, hsts},
		{"HTTPS 304", "GET /304 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n", true, hsts},
		{"HTTPS chunked response", "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS chunked response to POST", "POST /chunked HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", true, hsts},
		{"HTTPS HEAD of a chunked response", "HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS response without length", "GET /nolength HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS 103 Early Hints", "GET /early-hints HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS no response", "GET /drop HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS malformed response", "GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS malformed response to POST", "POST /garbage HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", true, hsts},
		{"HTTPS GET, the backend's HSTS", "GET /more/hsts HTTP/1.1\r\nHost: x\r\n\r\n", true, "Strict-Transport-Security: max-age=60"},
		{"HTTPS POST, the backend's HSTS", "POST /more/hsts HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", true, "Strict-Transport-Security: max-age=60"},
		{"HTTPS HTTP 1.0 GET", "GET /small HTTP/1.0\r\nHost: x\r\n\r\n", true, hsts},
		{"HTTPS chunked request body", "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", true, hsts},
		{"HTTPS annotated route", "GET /r/small HTTP/1.1\r\nHost: r.example\r\n\r\n", true, hsts},
		{"HTTPS annotated route, chunked response", "GET /r/chunked HTTP/1.1\r\nHost: r.example\r\n\r\n", true, hsts},
		{"HTTPS annotated route to POST", "POST /r/small HTTP/1.1\r\nHost: r.example\r\nContent-Length: 2\r\n\r\nhi", true, hsts},
		{"HTTP GET", "GET /small?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", false, "Location: https://x/small?q=1"},
		{"HTTP chunked request body", "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", false, "Location: https://x/small"},
		{"HTTP annotated route", "GET /r/small?q=1 HTTP/1.1\r\nHost: r.example\r\n\r\n", false, "Location: https://r.example/r/small?q=1"},
		{"HTTP annotated route to POST", "POST /r/small HTTP/1.1\r\nHost: r.example\r\nContent-Length: 2\r\n\r\nhi", false, "Location: https://r.example/r/small"},
		{"HTTP HEAD", "HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n", false, "Location: https://x/small"},
		{"HTTP POST", "POST /a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", false, "Location: https://x/a/b"},
		{"HTTP GET with a port in Host", "GET /small HTTP/1.1\r\nHost: x:80\r\n\r\n", false, "Location: https://x/small"},
		{"HTTP 1.0 GET", "GET /small HTTP/1.0\r\nHost: x\r\n\r\n", false, "Location: https://x/small"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := ls
			if tc.https {
				l = tl
			}
			if diff := l.compare(t, laneCase{req: tc.req}); diff != "" {
				t.Errorf("the lanes differ (-fast +net/http):\n%s", diff)
			}
			// What the defaults ask for is asserted on net/http's lane; the comparison covers the other.
			res := runLane(t, l.dial(t, l.netHTTP), ls.be, tc.req, false, false)
			if len(res.client) < 2 || !strings.Contains(res.client[1], "\n"+tc.want+"\n") {
				t.Errorf("the client received:\n%s\nwant %s in the response to the case", strings.Join(res.client, "\n--\n"), tc.want)
			}
			if hstsFields := strings.Count(strings.Join(res.client, "\n"), "Strict-Transport-Security:"); !tc.https && hstsFields > 0 || tc.https && hstsFields != len(res.client) {
				t.Errorf("%d Strict-Transport-Security fields in %d responses:\n%s", hstsFields, len(res.client), strings.Join(res.client, "\n--\n"))
			}
		})
	}
}

// TestLanesHandedOver compares the lanes on requests the fast path hands to net/http with the rest
// of their connection (and the bytes it read of them), over plain connections and over TLS: Expect,
// a chunked request body, an upgrade, a head larger than its buffer. Each is sent on a used
// connection and followed by a plain GET, which net/http serves then.
func TestLanesHandedOver(t *testing.T) {
	ls := startLanes(t)
	more := startMoreBackend(t, ls.be)
	ls.apply(merge(simple("", "lanes", ls.be.addr), moreRoutes("", more)))
	const ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	bigField := "X-Big: " + strings.Repeat("h", 20<<10) + "\r\n"
	for _, tc := range []struct {
		name  string
		steps []laneStep
	}{
		{"Expect 100-continue, body sent at once", oneRequest("POST /small HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")},
		{"Expect 100-continue, body sent after 100", []laneStep{
			plainStep,
			{send: "POST /small HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", read: "POST", interim: true},
			{send: "hello", read: "POST"},
			plainStep,
		}},
		{"Expect 100-continue, empty body", oneRequest("POST /small HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")},
		{"Expect 100-continue to a GET", oneRequest("GET /small HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")},
		{"unknown Expect", oneRequest("POST /small HTTP/1.1\r\nHost: x\r\nExpect: something\r\nContent-Length: 2\r\n\r\nhi")},
		{"chunked request body", oneRequest("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")},
		{"chunked request body with a trailer", oneRequest("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n")},
		{"chunked request body to a chunked response", oneRequest("PUT /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")},
		{"WebSocket upgrade", []laneStep{
			plainStep,
			{send: "GET /more/ws HTTP/1.1\r\nHost: x\r\n" + ws + "\r\n", read: "GET"},
			{raw: len(tunnelHello)},
			{send: "ping", raw: len("ping")},
			{send: "more bytes", raw: len("more bytes"), closeWrite: true},
		}},
		{"upgrade the backend refuses", oneRequest("GET /small HTTP/1.1\r\nHost: x\r\n" + ws + "\r\n")},
		{"h2c upgrade", oneRequest("GET /small HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")},
		{"a 20 KiB head", oneRequest("GET /small HTTP/1.1\r\nHost: x\r\n" + bigField + "\r\n")},
		{"a 20 KiB head with a body", oneRequest("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + bigField + "\r\nhi")},
		{"a 20 KiB head, 304", oneRequest("GET /304-plain HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n" + bigField + "\r\n")},
	} {
		for _, l := range []*lanes{ls, ls.overTLS()} {
			name := tc.name
			if l.tls {
				name += " over TLS"
			}
			t.Run(name, func(t *testing.T) {
				_, handed0 := l.fast.fastStats()
				fast := runSteps(t, l.dial(t, l.fast), l.be, tc.steps)
				_, handed := l.fast.fastStats()
				if handed == handed0 {
					t.Errorf("the fast lane did not hand the connection to net/http")
				}
				if diff := fast.diff(runSteps(t, l.dial(t, l.netHTTP), l.be, tc.steps)); diff != "" {
					t.Errorf("the lanes differ (-fast +net/http):\n%s", diff)
				}
				if strings.HasPrefix(fast.after, "failed") {
					t.Errorf("the exchange failed:\n%s", fast)
				}
			})
		}
	}
}

// TestLanesAnnotated compares the lanes on routes with annotations that take them off the fast
// path's plain handling: the fast path hands those connections to net/http, and the handler
// forwards with its own upstream code instead of net/http's Transport.
func TestLanesAnnotated(t *testing.T) {
	ls := startLanes(t)
	ing := func(name, host, pathType, path string, kv ...string) *networkingv1.Ingress {
		return pathIngress(name, 1, host, pathType, path, "lanes", nginxAnn(kv...))
	}
	in := simple("", "lanes", ls.be.addr)
	in.Ingresses = append(in.Ingresses,
		ing("rewrite", "rewrite.example", "ImplementationSpecific", "/r(/|$)(.*)", "rewrite-target", "/$2", "x-forwarded-prefix", "/r"),
		ing("vhost", "vhost.example", "Prefix", "/", "upstream-vhost", "backend.internal"),
		ing("cors", "cors.example", "Prefix", "/", "enable-cors", "true"),
		ing("timeout", "timeout.example", "Prefix", "/", "proxy-read-timeout", "30"),
		ing("app-root", "root.example", "Prefix", "/", "app-root", "/small"),
	)
	ls.apply(in)
	for _, tc := range []struct {
		name, req, want string
		resent          bool
	}{
		{"rewrite-target", "GET /r/small?q=1 HTTP/1.1\r\nHost: rewrite.example\r\n\r\n", "GET /small?q=1 HTTP/1.1", false},
		{"rewrite-target to POST", "POST /r/chunked HTTP/1.1\r\nHost: rewrite.example\r\nContent-Length: 2\r\n\r\nhi", "POST /chunked HTTP/1.1", false},
		{"rewrite-target, 304", "GET /r/304-plain HTTP/1.1\r\nHost: rewrite.example\r\nIf-None-Match: \"v1\"\r\n\r\n", "X-Forwarded-Prefix: /r", false},
		{"rewrite-target, HEAD", "HEAD /r/big HTTP/1.1\r\nHost: rewrite.example\r\n\r\n", "HEAD /big HTTP/1.1", false},
		{"upstream-vhost", "GET /small HTTP/1.1\r\nHost: vhost.example\r\n\r\n", "Host: backend.internal", false},
		{"upstream-vhost to POST", "POST /sniff HTTP/1.1\r\nHost: vhost.example\r\nContent-Length: 2\r\n\r\nhi", "Host: backend.internal", false},
		{"enable-cors", "GET /small HTTP/1.1\r\nHost: cors.example\r\nOrigin: https://a.example\r\n\r\n", "", false},
		{"enable-cors preflight", "OPTIONS /small HTTP/1.1\r\nHost: cors.example\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n", "", false},
		{"proxy-read-timeout", "GET /hop-listed HTTP/1.1\r\nHost: timeout.example\r\n\r\n", "", false},
		{"proxy-read-timeout to POST", "POST /trailers HTTP/1.1\r\nHost: timeout.example\r\nTE: trailers\r\nContent-Length: 2\r\n\r\nhi", "", false},
		// Both lanes send a GET again on a new connection after a reused one closed without an answer.
		// The fast path's upstream code keeps one pool per endpoint for all routes, so the GET goes on
		// the connection the plain GET before it left, and is sent again; net/http's lane sends a route
		// with its own timeouts through a Transport of its own (transportFor), whose pool has no
		// connection to reuse here: the GET goes on a new one, which is not retried.
		{"proxy-read-timeout, no response", "GET /drop HTTP/1.1\r\nHost: timeout.example\r\n\r\n", "", true},
		{"proxy-read-timeout, 64 KiB body", "GET /big HTTP/1.1\r\nHost: timeout.example\r\n\r\n", "", false},
		{"app-root", "GET / HTTP/1.1\r\nHost: root.example\r\n\r\n", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := ls.compare(t, laneCase{req: tc.req, resent: tc.resent}); diff != "" {
				t.Errorf("the lanes differ (-fast +net/http):\n%s", diff)
			}
			if tc.want == "" {
				return
			}
			res := runLane(t, ls.dial(t, ls.fast), ls.be, tc.req, false, false)
			if len(res.backend) < 2 || !strings.Contains("\n"+res.backend[1]+"\n", "\n"+tc.want+"\n") {
				t.Errorf("the backend received:\n%s\nwant %s in the case's request", strings.Join(res.backend, "\n--\n"), tc.want)
			}
		})
	}
	if _, handed := ls.fast.fastStats(); handed == 0 {
		t.Errorf("the fast lane handed no connection to net/http: the annotated routes were not the handler's")
	}
}

// TestLanesProxyProtocol compares the lanes behind a balancer that sends a PROXY protocol header
// (--ingress-proxy-protocol), over plain connections and TLS: the client address the backend is told
// is the header's, on the fast path and after a handover to net/http.
func TestLanesProxyProtocol(t *testing.T) {
	ls := startLanes(t, func(c *Config) { c.ProxyProtocol = true })
	ls.preface = "PROXY TCP4 192.0.2.1 192.0.2.2 50000 80\r\n"
	for _, l := range []*lanes{ls, ls.overTLS()} {
		for _, tc := range []laneCase{
			{name: "GET", req: "GET /small HTTP/1.1\r\nHost: x\r\n\r\n"},
			{name: "POST", req: "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"},
			{name: "forwarded headers replaced", req: "GET /small HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.0.1\r\nX-Real-IP: 198.18.0.1\r\n\r\n"},
			{name: "HTTP 1.0 keep-alive", req: "GET /small HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"},
			{name: "no response to a GET", req: "GET /drop HTTP/1.1\r\nHost: x\r\n\r\n"},
			{name: "handed over: chunked request body", req: "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"},
			{name: "handed over: a 20 KiB head", req: "GET /small HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("h", 20<<10) + "\r\n\r\n"},
		} {
			name := tc.name
			if l.tls {
				name += " over TLS"
			}
			t.Run(name, func(t *testing.T) {
				if diff := l.compare(t, tc); diff != "" {
					t.Errorf("the lanes differ (-fast +net/http):\n%s", diff)
				}
				res := runLane(t, l.dial(t, l.fast), l.be, tc.req, false, false)
				if len(res.backend) < 3 {
					t.Errorf("the backend received %d requests, want the three at least", len(res.backend))
				}
				for _, r := range res.backend {
					if !strings.Contains(r, "\nX-Forwarded-For: 192.0.2.1\n") || !strings.Contains(r, "\nX-Real-Ip: 192.0.2.1\n") {
						t.Errorf("the backend received:\n%s\nwant the PROXY header's address in X-Forwarded-For and X-Real-Ip", r)
					}
				}
			})
		}
	}
	if served, _ := ls.fast.fastStats(); served == 0 {
		t.Errorf("the fast lane served no request behind the PROXY header")
	}
}

// apply applies in to both lanes' harnesses.
func (ls *lanes) apply(in cluster.Inputs) {
	for _, h := range []*harness{ls.fast, ls.netHTTP} {
		h.apply(in)
	}
}

// overTLS returns the lanes with the clients connected over TLS.
func (ls *lanes) overTLS() *lanes {
	l := *ls
	l.tls = true
	return &l
}

// tunnelHello is what the upgrade backend sends first after its 101.
const tunnelHello = "hello from the backend"

// startMoreBackend starts a backend for the paths under /more that the scripted one cannot answer: a
// WebSocket upgrade (101, then tunnelHello and an echo of what it reads) and its own HSTS. It records
// the requests in be's list.
func startMoreBackend(t *testing.T, be *scriptedBackend) string {
	return serveLoopback(t, fmt.Sprintf("127.0.0.%d", 2+nextLoopback.Add(1)%250), func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := be.read(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/more/ws" {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"+tunnelHello)
				_, _ = io.Copy(c, br)
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=60\r\nContent-Length: 2\r\n\r\nok")
		}
	})
}

// moreRoutes routes host's paths under /more to the backend at addr.
func moreRoutes(host, addr string) cluster.Inputs {
	svcs, slices := serviceInputs("more", addr)
	return cluster.Inputs{
		Ingresses:      []*networkingv1.Ingress{pathIngress("more", 1, host, "Prefix", "/more", "more", nil)},
		Services:       svcs,
		EndpointSlices: slices,
	}
}

// laneStep is one step of an exchange on a connection: it sends send, then reads a response to read
// (a method; with the interim responses before it, or the first response only when interim) or raw
// bytes, and closes the sending side when closeWrite.
type laneStep struct {
	send, read string
	interim    bool
	raw        int
	closeWrite bool
}

var plainStep = laneStep{send: "GET /small HTTP/1.1\r\nHost: x\r\n\r\n", read: "GET"}

// oneRequest is the exchange of runLane: req between two plain GETs, one answer read for each.
func oneRequest(req string) []laneStep {
	method, _, _ := strings.Cut(req, " ")
	return []laneStep{plainStep, {send: req, read: method}, plainStep}
}

// runSteps runs steps on c and returns what the backend and the client received, as runLane does
// for one request; interim responses are read as they come, and raw bytes are recorded as a tunnel.
func runSteps(t *testing.T, c net.Conn, be *scriptedBackend, steps []laneStep) laneResult {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 64<<10)
	be.take()
	res := laneResult{after: "open"}
	step := func(s laneStep) error {
		if s.send != "" {
			if _, err := io.WriteString(c, s.send); err != nil {
				return err
			}
		}
		if s.closeWrite {
			defer func() { _ = c.(interface{ CloseWrite() error }).CloseWrite() }()
		}
		if s.raw > 0 {
			b := make([]byte, s.raw)
			if _, err := io.ReadFull(br, b); err != nil {
				return err
			}
			res.client = append(res.client, fmt.Sprintf("tunnel %q", b))
			return nil
		}
		for s.read != "" {
			resp, err := readRawResponse(br, s.read)
			if err != nil {
				return err
			}
			res.client = append(res.client, resp)
			status, _, _ := strings.Cut(resp, "\n")
			if s.interim || !strings.HasPrefix(status, "HTTP/1.1 1") || strings.HasPrefix(status, "HTTP/1.1 101") {
				break
			}
		}
		return nil
	}
	for _, s := range steps {
		if err := step(s); err != nil {
			res.after = "failed: " + err.Error()
			if errors.Is(err, io.EOF) || errors.Is(err, errCutShort) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
				res.after = "closed"
			}
			break
		}
	}
	if last := steps[len(steps)-1]; res.after == "open" && last.closeWrite {
		// After the client's end, the tunnel ends: the server must close too.
		if _, err := br.ReadByte(); errors.Is(err, io.EOF) {
			res.after = "closed after the client's end"
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			res.after = "still open after the client's end"
		}
	}
	res.backend = be.take()
	return res
}
