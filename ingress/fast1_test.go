package ingress

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tests of the client-side fast path (proxy.ConnServer) through the listeners: which requests it
// serves, which hand the connection to net/http, and that the answers are the same either way.

// fastStats sums the fast path's counters over the listeners.
func (h *harness) fastStats() (served, handed uint64) {
	l := h.ing.lst.Load()
	for _, f := range l.fast {
		if f != nil {
			s, hd := f.Stats()
			served, handed = served+s, handed+hd
		}
	}
	return served, handed
}

// rawConn is a client connection written by hand.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (h *harness) dial(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads one response to a request with method and returns it with its body.
func (rc *rawConn) read(method string) (*http.Response, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: method})
	if err != nil {
		rc.t.Fatalf("reading a response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading a response body: %v", err)
	}
	resp.Body.Close()
	return resp, string(body)
}

// closed reports whether the server closed the connection (nothing more to read).
func (rc *rawConn) closed() bool {
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := rc.br.ReadByte()
	return err == io.EOF
}

// echoBackend answers with the method, path, query, body and a few request headers.
func echoBackend(t *testing.T) *backend {
	return startBackend(t, "echo", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upgrade" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			io.Copy(conn, brw)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s ?%s [%s] xff=%s xfp=%s", r.Method, r.URL.Path, r.URL.RawQuery, body, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
	})
}

func TestFastPathKeepAliveThenHandover(t *testing.T) {
	h := newHarness(t)
	be := echoBackend(t)
	h.apply(simple("", "echo", be.addr))
	for _, tc := range []struct {
		name, req, want string
		status          int
	}{
		{"expect", "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", "POST /e ? [abc]", 200},
		{"chunked body", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST /c ? [abc]", 200},
		{"absolute URI", "GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n", "GET /abs ? []", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := h.dial(t)
			served0, handed0 := h.fastStats()
			for i := range 3 {
				rc.send(fmt.Sprintf("GET /k%d?i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i, i))
				resp, body := rc.read("GET")
				if want := fmt.Sprintf("GET /k%d ?i=%d [] xff=127.0.0.1 xfp=http", i, i); resp.StatusCode != 200 || body != want {
					t.Fatalf("request %d: %d %q, want %q", i, resp.StatusCode, body, want)
				}
			}
			served, handed := h.fastStats()
			if served-served0 != 3 || handed != handed0 {
				t.Fatalf("fast path served %d and handed over %d connections, want 3 and 0", served-served0, handed-handed0)
			}
			rc.send(tc.req)
			if tc.name == "expect" {
				if resp, _ := rc.read("POST"); resp.StatusCode != http.StatusContinue {
					t.Fatalf("Expect: 100-continue answered %d first", resp.StatusCode)
				}
			}
			resp, body := rc.read("GET")
			if resp.StatusCode != tc.status || !strings.HasPrefix(body, tc.want) {
				t.Fatalf("after the handover: %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.want)
			}
			if _, handed := h.fastStats(); handed != handed0+1 {
				t.Fatalf("%d connections handed over, want 1", handed-handed0)
			}
			// net/http serves the rest of the connection.
			rc.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /after") {
				t.Fatalf("after the handover, the next request: %d %q", resp.StatusCode, body)
			}
		})
	}
	t.Run("upgrade", func(t *testing.T) {
		rc := h.dial(t)
		rc.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("first request: %d", resp.StatusCode)
		}
		rc.send("GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		rc.send("ping\n")
		if got, err := rc.br.ReadString('\n'); got != "ping\n" {
			t.Fatalf("echo over the upgraded connection: %q %v", got, err)
		}
	})
}

func TestFastPathPipelinedAndSplit(t *testing.T) {
	h := newHarness(t)
	be := echoBackend(t)
	h.apply(simple("", "echo", be.addr))
	rc := h.dial(t)
	rc.send("GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloHEAD /p3 HTTP/1.1\r\nHost: x\r\n\r\nGET /p4 HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []struct{ method, body string }{{"GET", "GET /p1 ? []"}, {"POST", "POST /p2 ? [hello]"}, {"HEAD", ""}, {"GET", "GET /p4 ? []"}} {
		resp, body := rc.read(want.method)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, want.body) || (want.body == "" && body != "") {
			t.Fatalf("pipelined %s: %d %q, want %q", want.method, resp.StatusCode, body, want.body)
		}
	}
	// A request arriving a few bytes at a time, the body too.
	req := "POST /split?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nX-Long: " + strings.Repeat("v", 300) + "\r\n\r\nbody"
	tcp := rc.c.(*net.TCPConn)
	tcp.SetNoDelay(true)
	for i := 0; i < len(req); i += 7 {
		rc.send(req[i:min(i+7, len(req))])
		time.Sleep(time.Millisecond) // separate segments
	}
	if resp, body := rc.read("POST"); resp.StatusCode != 200 || !strings.HasPrefix(body, "POST /split ?q=1 [body]") {
		t.Fatalf("split request: %d %q", resp.StatusCode, body)
	}
	if _, handed := h.fastStats(); handed != 0 {
		t.Fatalf("%d connections handed over, want none", handed)
	}
}

func TestFastPathMalformed(t *testing.T) {
	h := newHarness(t)
	be := echoBackend(t)
	h.apply(simple("", "echo", be.addr))
	for _, req := range []string{
		"GET / HTTP/1.1\r\n\r\n", // no Host
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
		"GET / HTTP/9.1\r\nHost: x\r\n\r\n",
		"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n",
		// At least 14 bytes: net/http waits for as many on a connection it is given, to look for
		// the h2c preface.
		"\x16\x03\x01\x00\x00 junk junk\r\n\r\n",
	} {
		rc := h.dial(t)
		rc.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" + req)
		if resp, _ := rc.read("GET"); resp.StatusCode != 200 {
			t.Fatalf("the request before %q: %d", req, resp.StatusCode)
		}
		resp, _ := rc.read("GET")
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusHTTPVersionNotSupported {
			t.Errorf("%q answered %d, want 400", req, resp.StatusCode)
		}
		if !rc.closed() {
			t.Errorf("%q: the connection stayed open", req)
		}
	}
	// Oversize heads: beyond the fast path's buffer they are net/http's, which takes up to 1 MiB.
	rc := h.dial(t)
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 64<<10) + "\r\n\r\n")
	if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /big") {
		t.Fatalf("a 64 KiB head: %d %q", resp.StatusCode, body)
	}
	rc = h.dial(t)
	go io.WriteString(rc.c, "GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 2<<20)+"\r\n\r\n")
	if resp, _ := rc.read("GET"); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 2 MiB head: %d, want 431", resp.StatusCode)
	}
}

func TestFastPathConnectionSemantics(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, "codes", false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/304":
			w.Header().Set("ETag", `"e"`)
			w.WriteHeader(http.StatusNotModified)
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
			w.Header().Set("X-Trailer", "t") // not announced: dropped
		case "/long":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "0123456789")
		default:
			io.WriteString(w, "ok")
		}
	})
	h.apply(simple("", "codes", be.addr))

	t.Run("HTTP/1.0 closes", func(t *testing.T) {
		rc := h.dial(t)
		rc.send("GET / HTTP/1.0\r\n\r\n")
		if resp, body := rc.read("GET"); resp.StatusCode != 200 || body != "ok" || !resp.Close {
			t.Fatalf("HTTP/1.0: %d %q close=%v", resp.StatusCode, body, resp.Close)
		}
		if !rc.closed() {
			t.Fatal("the HTTP/1.0 connection stayed open")
		}
	})
	t.Run("HTTP/1.0 keep-alive", func(t *testing.T) {
		rc := h.dial(t)
		for range 2 {
			rc.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			resp, body := rc.read("GET")
			if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("Connection") != "keep-alive" {
				t.Fatalf("HTTP/1.0 keep-alive: %d %q %v", resp.StatusCode, body, resp.Header)
			}
		}
	})
	t.Run("HTTP/1.0 chunked upstream", func(t *testing.T) {
		rc := h.dial(t)
		rc.send("GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		if resp, body := rc.read("GET"); body != "part0;part1;part2;" || len(resp.TransferEncoding) != 0 {
			t.Fatalf("HTTP/1.0 of a chunked response: %q %v", body, resp.TransferEncoding)
		}
		if !rc.closed() {
			t.Fatal("a body of unknown length to HTTP/1.0 must end with the connection")
		}
	})
	t.Run("Connection close", func(t *testing.T) {
		rc := h.dial(t)
		rc.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if resp, _ := rc.read("GET"); !resp.Close {
			t.Fatal("no Connection: close in the answer")
		}
		if !rc.closed() {
			t.Fatal("the connection stayed open")
		}
	})
	t.Run("bodiless answers keep the connection", func(t *testing.T) {
		rc := h.dial(t)
		rc.send("HEAD /long HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /long HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := rc.read("HEAD")
		if resp.StatusCode != 200 || body != "" || resp.ContentLength != 10 {
			t.Fatalf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
		}
		if resp, body = rc.read("GET"); resp.StatusCode != 304 || body != "" || resp.Header.Get("Etag") != `"e"` {
			t.Fatalf("304: %d %q %v", resp.StatusCode, body, resp.Header)
		}
		if resp, body = rc.read("GET"); resp.StatusCode != 204 || body != "" {
			t.Fatalf("204: %d %q", resp.StatusCode, body)
		}
		if resp, body = rc.read("GET"); body != "part0;part1;part2;" || len(resp.TransferEncoding) != 1 || resp.Header.Get("Server") != "baregate" {
			t.Fatalf("chunked: %q %v %v", body, resp.TransferEncoding, resp.Header)
		}
		if resp, body = rc.read("GET"); body != "0123456789" || resp.ContentLength != 10 || resp.Header.Get("Date") == "" {
			t.Fatalf("after them: %q %d %v", body, resp.ContentLength, resp.Header)
		}
	})
	t.Run("404 and unread bodies", func(t *testing.T) {
		h.apply(simple("only.example.com", "codes", be.addr))
		rc := h.dial(t)
		rc.send("POST / HTTP/1.1\r\nHost: other.example.com\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: only.example.com:80\r\n\r\n")
		if resp, body := rc.read("POST"); resp.StatusCode != 404 || !strings.Contains(body, "no Ingress rule") || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("404: %d %q %v", resp.StatusCode, body, resp.Header)
		}
		if resp, body := rc.read("GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("after an unread body: %d %q", resp.StatusCode, body)
		}
		// HEAD announces the length GET would have, as net/http does.
		rc.send("HEAD / HTTP/1.1\r\nHost: other.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: other.example.com\r\n\r\n")
		head, body := rc.read("HEAD")
		get, getBody := rc.read("GET")
		if head.StatusCode != 404 || body != "" || head.ContentLength != int64(len(getBody)) || get.ContentLength != int64(len(getBody)) {
			t.Fatalf("HEAD 404: length %d body %q; GET: length %d body %q", head.ContentLength, body, get.ContentLength, getBody)
		}
	})
}

// TestFastPathTLS: HTTP/1.1 over TLS is served by the fast path, h2 by net/http.
func TestFastPathTLS(t *testing.T) {
	h := newHarness(t)
	be := echoBackend(t)
	h.apply(simple("", "echo", be.addr))
	c, err := tls.Dial("tcp", strings.TrimPrefix(h.httpsURL, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	served0, _ := h.fastStats()
	for i := range 3 {
		rc.send("GET /tls" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.HasSuffix(body, "xfp=https") {
			t.Fatalf("over TLS: %d %q", resp.StatusCode, body)
		}
	}
	if served, _ := h.fastStats(); served-served0 != 3 {
		t.Fatalf("fast path served %d requests over TLS, want 3", served-served0)
	}
	// The handover of a TLS connection: net/http reads the decrypted bytes the fast path buffered.
	rc.send("POST /tls-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /tls-after HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.read("POST"); resp.StatusCode != 200 || !strings.HasPrefix(body, "POST /tls-chunked ? [abc]") || !strings.HasSuffix(body, "xfp=https") {
		t.Fatalf("after the TLS handover: %d %q", resp.StatusCode, body)
	}
	if resp, body := rc.read("GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /tls-after") {
		t.Fatalf("the next request after the TLS handover: %d %q", resp.StatusCode, body)
	}
	resp, err := tlsClient("").Get(h.httpsURL + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("h2: %s %d", resp.Proto, resp.StatusCode)
	}
}

// TestFastPathStaleUpstream: a backend that closes each keep-alive connection after one response,
// without saying so, leaves stale connections in the pool; every request still succeeds, on a new
// connection (bodyless idempotent ones after a failed attempt, others after the liveness check).
func TestFastPathStaleUpstream(t *testing.T) {
	h := newHarness(t)
	addr := serveLoopback(t, fmt.Sprintf("127.0.0.%d", 2+nextLoopback.Add(1)%250), func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		msg := req.Method + " " + string(body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
	})
	h.apply(simple("", "stale", addr))
	rc := h.dial(t)
	for i, tc := range []struct{ req, method, want string }{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "GET "},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "GET "},
		{"POST / HTTP/1.1\r\nHost: x\r\n\r\n", "POST", "POST "},
		{"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", "PUT", "PUT body"},
		{"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", "DELETE", "DELETE "},
	} {
		rc.send(tc.req)
		if resp, body := rc.read(tc.method); resp.StatusCode != 200 || body != tc.want {
			t.Fatalf("request %d: %d %q, want %q", i, resp.StatusCode, body, tc.want)
		}
	}
}
