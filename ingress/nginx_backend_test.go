package ingress

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// blackhole returns a loopback address whose SYNs are dropped: a listener with a full accept
// queue, which Linux answers by dropping new SYNs, so a connect there hangs until the dialer gives up.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ip := [4]byte{127, 0, 0, byte(2 + nextLoopback.Add(1)%250)}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ip}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("%d.%d.%d.%d:%d", ip[0], ip[1], ip[2], ip[3], sa.(*syscall.SockaddrInet4).Port)
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		syscall.Close(fd)
	})
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr // the queue is full: this SYN was dropped
		}
		conns = append(conns, c)
	}
	t.Fatal("could not fill the accept queue of the blackhole listener")
	return ""
}

// TestNginxConnectTimeoutRetries: with proxy-connect-timeout 1, a request to a blackholed endpoint
// gives up connecting after a second and is retried on the other endpoint; the client sees 200.
func TestNginxConnectTimeoutRetries(t *testing.T) {
	h := newHarness(t)
	good := startBackend(t, "good", false, okHandler)
	hole := blackhole(t)
	h.apply(annotated("app.example", "web", nginxAnn("proxy-connect-timeout", "1"), hole, good.addr))
	for range 2 { // round robin: one of the two starts with the blackhole
		start := time.Now()
		resp, _ := h.send("GET", "app.example", "/", nil)
		expectStatus(t, "request", resp, 200)
		t.Logf("answered after %s", time.Since(start))
	}
	if n := h.metric("baregate_ingress_upstream_retries_total", "service", "default/web"); n != 1 {
		t.Errorf("retries counted %v, want 1 (the connect timeout)", n)
	}
	if n := good.hits.Load(); n != 2 {
		t.Errorf("the good endpoint served %d requests", n)
	}
}

// TestNginxReadTimeoutAnnotation: proxy-read-timeout 2 turns a backend that does not answer into 504
// (2 s, longer than net/http's 1 s wait for "100 Continue", so the two timers do not race).
func TestNginxReadTimeoutAnnotation(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	defer close(release)
	be := startBackend(t, "slow", false, func(w http.ResponseWriter, r *http.Request) { <-release })
	h.apply(annotated("app.example", "slow", nginxAnn("proxy-read-timeout", "2"), be.addr))
	resp, _ := h.send("POST", "app.example", "/", strings.NewReader("x"))
	expectStatus(t, "slow backend", resp, http.StatusGatewayTimeout)
	// Off the fast path (Expect: 100-continue goes through net/http's Transport) too.
	resp, _ = h.send("POST", "app.example", "/", strings.NewReader("x"), "Expect", "100-continue")
	expectStatus(t, "slow backend, Expect", resp, http.StatusGatewayTimeout)
}

// TestNginxBackendProtocols: HTTPS and GRPCS reach a TLS backend (HTTP/1.1 and HTTP/2), GRPC an
// h2c one.
func TestNginxBackendProtocols(t *testing.T) {
	h := newHarness(t)
	seen := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Proto", r.Proto)
		w.Header().Set("X-Seen-TLS", fmt.Sprint(r.TLS != nil))
	}
	tlsBackend := func(h2 bool) string {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+nextLoopback.Add(1)%250))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(seen))
		srv.Listener.Close()
		srv.Listener = ln
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return ln.Addr().String()
	}
	h2c := startBackend(t, "grpc", true, seen)
	h.apply(merge(
		annotated("https.example", "tls1", nginxAnn("backend-protocol", "HTTPS"), tlsBackend(false)),
		annotated("grpcs.example", "tls2", nginxAnn("backend-protocol", "GRPCS"), tlsBackend(true)),
		annotated("grpc.example", "grpc", nginxAnn("backend-protocol", "GRPC"), h2c.addr),
	))
	for host, want := range map[string]string{"https.example": "HTTP/1.1 true", "grpcs.example": "HTTP/2.0 true", "grpc.example": "HTTP/2.0 false"} {
		resp, _ := h.send("GET", host, "/", nil)
		expectStatus(t, host, resp, 200)
		if got := resp.Header.Get("X-Seen-Proto") + " " + resp.Header.Get("X-Seen-TLS"); got != want {
			t.Errorf("%s: backend saw %q, want %q", host, got, want)
		}
	}
	// A gRPC client speaking h2c with prior knowledge goes through too.
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: protos}}
	resp, _ := h.sendTo(c, h.httpURL, "POST", "grpcs.example", "/grpc.health.v1.Health/Check", strings.NewReader(""), "Content-Type", "application/grpc", "Te", "trailers")
	if resp.Header.Get("X-Seen-Proto") != "HTTP/2.0" {
		t.Errorf("gRPC over h2c to a GRPCS backend: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestMaxConnsPerBackend: with a bound of 2, a backend never sees more than 2 requests at once; the
// others wait for a slot and are served once the first ones finish.
func TestMaxConnsPerBackend(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ConnectTimeout = 30 * time.Second; c.Policy.MaxConnsPerBackend = 2 })
	var cur, peak atomic.Int64
	release := make(chan struct{})
	be := startBackend(t, "web", false, func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		cur.Add(-1)
	})
	other := startBackend(t, "web2", false, func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		cur.Add(-1)
	})
	h.apply(simple("", "web", be.addr, other.addr))
	const n = 6
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := h.sendTo(&http.Client{}, h.httpURL, "GET", "x.example", "/", nil)
			codes <- resp.StatusCode
		}()
	}
	waitFor(t, func() bool { return cur.Load() == 2 })
	time.Sleep(100 * time.Millisecond) // let the other requests try to get through
	if p := peak.Load(); p != 2 {
		t.Errorf("%d requests reached the backend at once, want 2", p)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("a queued request got %d", c)
		}
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("peak %d requests at once with a bound of 2", p)
	}
}

// TestNginxProblemsBecomeEvents: the leader reports annotation problems as Warning Events that name
// the annotation.
func TestNginxProblemsBecomeEvents(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, okHandler)
	h.apply(annotated("app.example", "web", nginxAnn("server-snippet", "location /x {}"), be.addr))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.ing.RunLeader(ctx) }()
	defer func() { stop(); <-done }()
	select {
	case ev := <-h.recorder.Events:
		if !strings.Contains(ev, "Warning SnippetIgnored") || !strings.Contains(ev, "nginx.ingress.kubernetes.io/server-snippet") || !strings.Contains(ev, "instead") {
			t.Errorf("event %q", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Event for the snippet")
	}
}
