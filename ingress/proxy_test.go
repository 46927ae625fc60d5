package ingress

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/baregate/baregate/ingress/proxy"
)

func TestNotFoundAndNoEndpoints(t *testing.T) {
	h := newHarness(t)
	web := startBackend(t, "web", false, okHandler)
	in := merge(simple("web.example.com", "web", web.addr), simple("empty.example.com", "empty"))
	h.apply(in)
	c := &http.Client{}
	if code, body, be := h.get(c, "web.example.com", "/x"); code != 200 || body != "ok" || be != "web" {
		t.Errorf("routed request: %d %q from %q", code, body, be)
	}
	if code, _, _ := h.get(c, "nobody.example.com", "/"); code != http.StatusNotFound {
		t.Errorf("unknown host: %d, want 404", code)
	}
	if code, _, _ := h.get(c, "empty.example.com", "/"); code != http.StatusServiceUnavailable {
		t.Errorf("backend without endpoints: %d, want 503", code)
	}
}

func TestRoundRobinSpread(t *testing.T) {
	h := newHarness(t)
	var addrs []string
	var bes []*backend
	for i := range 3 {
		b := startBackend(t, fmt.Sprint("b", i), false, okHandler)
		bes, addrs = append(bes, b), append(addrs, b.addr)
	}
	h.apply(simple("", "web", addrs...))
	c := &http.Client{}
	for range 30 {
		if code, _, _ := h.get(c, "x", "/"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	for _, b := range bes {
		if n := b.hits.Load(); n != 10 {
			t.Errorf("backend %s got %d of 30 requests, want 10 (round robin)", b.name, n)
		}
	}
	// An endpoint change keeps the rotation: adding a fourth endpoint does not restart at the first.
	b3 := startBackend(t, "b3", false, okHandler)
	h.apply(simple("", "web", append(addrs, b3.addr)...))
	for range 40 {
		h.get(c, "x", "/")
	}
	for _, b := range append(bes, b3) {
		if n := b.hits.Load(); n < 10 {
			t.Errorf("after adding an endpoint, backend %s has %d hits", b.name, n)
		}
	}
}

// TestLeastInFlight: with power-of-two choices, a backend stuck on slow requests gets few new ones.
func TestLeastInFlight(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Balance = proxy.LeastInFlight })
	release := make(chan struct{})
	slow := startBackend(t, "slow", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	fast := startBackend(t, "fast", false, okHandler)
	h.apply(simple("", "web", slow.addr, fast.addr))
	defer close(release)
	// Park one request on the slow backend (while both are idle, either may get it), sending them one
	// at a time so that no stray request is still on its way when counting starts.
	for slow.hits.Load() < 1 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := http.Get(h.httpURL + "/slow"); err == nil {
				resp.Body.Close()
			}
		}()
		for slow.hits.Load() < 1 {
			select {
			case <-done:
			case <-time.After(time.Millisecond):
				continue
			}
			break
		}
	}
	before := slow.hits.Load()
	c := &http.Client{}
	for range 40 {
		h.get(c, "x", "/fast")
	}
	if got := slow.hits.Load() - before; got != 0 {
		t.Errorf("the backend with requests in flight got %d of 40 new requests, want 0", got)
	}
}

// TestRetryAndPassiveHealth: a refusing endpoint costs no failed request: the request moves to a live
// endpoint, and the refusing one is skipped afterwards, so it is tried once.
func TestRetryAndPassiveHealth(t *testing.T) {
	h := newHarness(t)
	live := startBackend(t, "live", false, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.Method, len(body))
	})
	dead := deadAddr(t)
	h.apply(simple("", "web", dead, live.addr))
	c := &http.Client{}
	for i := range 20 {
		method := http.MethodGet
		var body io.Reader
		if i%2 == 1 {
			method, body = http.MethodPost, strings.NewReader("payload") // not idempotent, but never sent: retried
		}
		req, _ := http.NewRequest(method, h.httpURL+"/", body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "GET 0"
		if method == http.MethodPost {
			want = "POST 7"
		}
		if resp.StatusCode != 200 || string(b) != want {
			t.Errorf("request %d: %d %q, want 200 %q", i, resp.StatusCode, b, want)
		}
	}
	if n := h.metric("baregate_ingress_upstream_errors_total", "service", "default/web"); n != 1 {
		t.Errorf("upstream errors %v, want 1 (the dead endpoint skipped after its first refusal)", n)
	}
}

// TestAllEndpointsDown: when every endpoint refuses, the client gets 502, not a hang.
func TestAllEndpointsDown(t *testing.T) {
	h := newHarness(t)
	h.apply(simple("", "web", deadAddr(t), deadAddr(t)))
	if code, _, _ := h.get(&http.Client{}, "x", "/"); code != http.StatusBadGateway {
		t.Errorf("status %d, want 502", code)
	}
}

func TestReadTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReadTimeout = 200 * time.Millisecond; c.Retries = 0 })
	release := make(chan struct{})
	defer close(release)
	slow := startBackend(t, "slow", false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	h.apply(simple("", "web", slow.addr))
	if code, _, _ := h.get(&http.Client{}, "x", "/"); code != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", code)
	}
}

// TestForwardedHeaders: the backend sees the client's Host and the X-Forwarded-* headers; hop-by-hop
// headers (including ones the client names in Connection) do not cross the proxy.
func TestForwardedHeaders(t *testing.T) {
	h := newHarness(t)
	echo := startBackend(t, "echo", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "backend-server")
		w.Header().Set("Keep-Alive", "timeout=5")
		json.NewEncoder(w).Encode(map[string]any{"host": r.Host, "headers": r.Header})
	})
	h.apply(simple("shop.example.com", "echo", echo.addr))
	for _, c := range []struct {
		client *http.Client
		url    string
		proto  string
	}{{&http.Client{}, h.httpURL, "http"}, {tlsClient("shop.example.com"), h.httpsURL, "https"}} {
		req, _ := http.NewRequest(http.MethodGet, c.url+"/p?q=1", nil)
		req.Host = "shop.example.com"
		req.Header.Set("X-Forwarded-For", "203.0.113.66") // a client's claim, not trusted
		if c.proto == "http" {                            // HTTP/2 has no Connection header
			req.Header.Set("Connection", "X-Secret")
			req.Header.Set("X-Secret", "hop")
		}
		req.Header.Set("X-Kept", "end-to-end")
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Host    string
			Headers http.Header
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(c.url, "http://"), "https://"))
		want := map[string]string{
			"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1", "X-Forwarded-Proto": c.proto,
			"X-Forwarded-Host": "shop.example.com", "X-Forwarded-Port": port, "X-Kept": "end-to-end", "X-Secret": "",
		}
		for k, v := range want {
			if g := strings.Join(got.Headers[k], ","); g != v {
				t.Errorf("%s: backend saw %s=%q, want %q", c.proto, k, g, v)
			}
		}
		if got.Host != "shop.example.com" {
			t.Errorf("%s: backend saw Host %q", c.proto, got.Host)
		}
		if s := resp.Header.Get("Server"); s != "baregate" {
			t.Errorf("%s: Server header %q", c.proto, s)
		}
		if resp.Header.Get("Keep-Alive") != "" {
			t.Errorf("%s: hop-by-hop Keep-Alive reached the client", c.proto)
		}
	}
}

// TestLargeBodies: 8 MiB up and 16 MiB down arrive intact (with proxy-body-size 0, since the
// ingress-nginx default refuses bodies over 1 MiB).
func TestLargeBodies(t *testing.T) {
	h := newHarness(t)
	down := make([]byte, 16<<20)
	rand.Read(down)
	be := startBackend(t, "big", false, func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, _ := io.Copy(sum, r.Body)
		w.Header().Set("X-Up-Sha", hex.EncodeToString(sum.Sum(nil)))
		w.Header().Set("X-Up-Len", fmt.Sprint(n))
		w.Write(down)
	})
	in := simple("", "big", be.addr)
	in.Ingresses[0].Annotations = map[string]string{"nginx.ingress.kubernetes.io/proxy-body-size": "0"}
	h.apply(in)
	up := make([]byte, 8<<20)
	rand.Read(up)
	resp, err := http.Post(h.httpURL+"/upload", "application/octet-stream", bytes.NewReader(up))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	upSum := sha256.Sum256(up)
	if resp.Header.Get("X-Up-Sha") != hex.EncodeToString(upSum[:]) || resp.Header.Get("X-Up-Len") != fmt.Sprint(len(up)) {
		t.Errorf("request body changed on the way: %s bytes", resp.Header.Get("X-Up-Len"))
	}
	if !bytes.Equal(got, down) {
		t.Errorf("response body changed on the way: %d bytes", len(got))
	}
}

// TestStreaming: a chunk of a response of unknown length reaches the client before the backend
// writes the next one, and a table swap meanwhile does not cut the stream.
func TestStreaming(t *testing.T) {
	h := newHarness(t)
	next := make(chan struct{})
	be := startBackend(t, "stream", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			<-next
		}
	})
	in := simple("", "stream", be.addr)
	h.apply(in)
	resp, err := http.Get(h.httpURL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		br.ReadString('\n')
		// An unrelated change: another Ingress appears.
		other := startBackend(t, fmt.Sprint("other", i), false, okHandler)
		h.apply(merge(in, simple("other.example.com", fmt.Sprint("other", i), other.addr)))
		next <- struct{}{}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("stream ended with %q, %v", rest, err)
	}
}

// TestWebSocket: an Upgrade request gets the backend's 101 and then a two-way byte stream, which
// survives route table swaps.
func TestWebSocket(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "ws", false, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			http.Error(w, "not an upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-Websocket-Accept: %s\r\n\r\n", r.Header.Get("Sec-Websocket-Key"))
		brw.Flush()
		io.Copy(conn, brw) // echo
	})
	in := simple("ws.example.com", "ws", be.addr)
	h.apply(in)
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k3y\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != "k3y" || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("upgrade answered %d %v", resp.StatusCode, resp.Header)
	}
	for i := range 3 {
		msg := fmt.Sprintf("frame %d\n", i)
		io.WriteString(conn, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo %d: %q %v", i, got, err)
		}
		other := startBackend(t, fmt.Sprint("o", i), false, okHandler)
		h.apply(merge(in, simple("o.example.com", fmt.Sprint("o", i), other.addr)))
	}
}

// TestSNIAndRotation: each server name gets its Secret's certificate (wildcards included, the
// default certificate otherwise); a rotated Secret serves new handshakes while a connection opened
// before the rotation keeps working.
func TestSNIAndRotation(t *testing.T) {
	h := newHarness(t)
	web := startBackend(t, "web", false, okHandler)
	exact, wild := mustCert(t, "exact-v1", "shop.example.com"), mustCert(t, "wild", "*.example.com")
	in := simple("shop.example.com", "web", web.addr)
	in.Ingresses[0].Spec.TLS = tlsEntries("exact", "shop.example.com", "wild", "*.example.com")
	in.Secrets = append(in.Secrets, exact, wild)
	h.apply(in)
	for name, want := range map[string]string{"shop.example.com": "exact-v1", "api.example.com": "wild", "a.b.example.com": "baregate default certificate", "": "baregate default certificate"} {
		if got := peerCN(t, h.httpsURL, name); got != want {
			t.Errorf("SNI %q: certificate %q, want %q", name, got, want)
		}
	}
	// Keep an HTTP/2 connection open across the rotation.
	c := tlsClient("shop.example.com")
	get := func() *http.Response {
		resp, err := c.Get(h.httpsURL + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	first := get()
	if first.ProtoMajor != 2 {
		t.Errorf("client got HTTP/%d over TLS, want HTTP/2", first.ProtoMajor)
	}
	rotated := mustCert(t, "exact-v2", "shop.example.com")
	rotated.Name, rotated.ResourceVersion = "exact", "2"
	in.Secrets = []*corev1.Secret{rotated, wild}
	h.apply(in)
	if got := peerCN(t, h.httpsURL, "shop.example.com"); got != "exact-v2" {
		t.Errorf("after rotation: certificate %q, want exact-v2", got)
	}
	second := get()
	if second.TLS.PeerCertificates[0].Subject.CommonName != "exact-v1" {
		t.Errorf("the connection from before the rotation was replaced (now %s)", second.TLS.PeerCertificates[0].Subject.CommonName)
	}
}

func peerCN(t *testing.T, url, serverName string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{InsecureSkipVerify: true, ServerName: serverName, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake for %q: %v", serverName, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestOldTLSRefused: TLS 1.1 and below are refused.
func TestOldTLSRefused(t *testing.T) {
	h := newHarness(t)
	_, err := tls.Dial("tcp", strings.TrimPrefix(h.httpsURL, "https://"), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
}

// TestKeepAliveClosedByBackend: pooled connections that the backend closed while idle are not
// reused, so even a POST (not retried once its body is sent) succeeds after the backend's idle
// timeout; responses with Connection: close are not pooled either.
func TestKeepAliveClosedByBackend(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "web", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, body)
	})
	be.srv.IdleTimeout = 50 * time.Millisecond
	h.apply(simple("", "web", be.addr))
	c := &http.Client{}
	for i := range 6 {
		path := "/"
		if i%3 == 2 {
			path = "/close"
		}
		resp, err := c.Post(h.httpURL+path, "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "POST hello" {
			t.Errorf("request %d: %d %q", i, resp.StatusCode, b)
		}
		time.Sleep(150 * time.Millisecond) // longer than the backend's idle timeout
	}
}

// TestTruncatedResponse: a backend that dies mid-body cuts the client's response short too (never a
// clean, shorter response), and the request is still counted.
func TestTruncatedResponse(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "cut", false, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")
		brw.Flush()
		conn.Close()
	})
	h.apply(simple("", "cut", be.addr))
	// Headers still in the server's buffer die with the connection; either way the client must see
	// an error, not a complete response.
	resp, err := http.Get(h.httpURL + "/")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a truncated response reached the client as complete")
	}
	waitFor(t, func() bool { r := h.ing.Routes(); return len(r) == 1 && r[0].Requests == 1 })
}
