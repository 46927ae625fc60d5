package ingress

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of the event loops relaying chunked responses themselves (proxy/loop.go, proxy/chunked.go):
// the backend's framing goes to the client as it came, the connection stays on its loop, and a body
// that ends short or is malformed ends the client connection as a short Content-Length body does.

// looped sums the client connections the listeners' event loops serve now.
func (h *harness) looped() int64 {
	var n int64
	for _, f := range h.ing.lst.Load().fast {
		if f != nil {
			n += f.Looped()
		}
	}
	return n
}

// rawReply is what chunkedBackend writes for a path: the pieces one after the other, with a pause
// between two, then it closes the connection when close is set.
type rawReply struct {
	pieces []string
	pause  time.Duration
	close  bool
}

const chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"

// chunkedBackend answers each request with the reply for its method and path ("HEAD /x" before
// "/x"), or a Content-Length framed "small" for paths without one; it returns its address and the
// count of connections it accepted.
func chunkedBackend(t *testing.T, replies map[string]rawReply) (string, *atomic.Int32) {
	conns := new(atomic.Int32)
	addr := serveLoopback(t, fmt.Sprintf("127.0.0.%d", 2+nextLoopback.Add(1)%250), func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			r, ok := replies[req.Method+" "+req.URL.Path]
			if !ok {
				r, ok = replies[req.URL.Path]
			}
			if !ok {
				r = rawReply{pieces: []string{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nsmall"}}
			}
			for i, p := range r.pieces {
				if i > 0 {
					time.Sleep(r.pause)
				}
				if _, err := io.WriteString(c, p); err != nil {
					return
				}
			}
			if r.close {
				return
			}
		}
	})
	return addr, conns
}

// chunkedShapes are chunked responses the loop relays, each with the body and trailers the client
// must get, and the framing: chunked, or none for an empty body (Content-Length: 0) and bodiless ones.
var chunkedShapes = []struct {
	name, method, path string
	reply              rawReply
	body               string
	trailer            http.Header
	chunked            bool
	status             int
}{
	{name: "one chunk", path: "/one", reply: rawReply{pieces: []string{chunkedHead + "5\r\nhello\r\n0\r\n\r\n"}}, body: "hello", chunked: true},
	{name: "head and body apart", path: "/apart", reply: rawReply{pieces: []string{chunkedHead, "5\r\nhello\r\n0\r\n\r\n"}, pause: 20 * time.Millisecond}, body: "hello", chunked: true},
	{name: "many small chunks in packets of their own", path: "/many", reply: rawReply{pieces: slices.Concat([]string{chunkedHead},
		slices.Repeat([]string{"1\r\nx\r\n"}, 20), []string{"0\r\n\r\n"}), pause: 10 * time.Millisecond}, body: strings.Repeat("x", 20), chunked: true},
	{name: "chunks split across reads", path: "/split", reply: rawReply{pieces: []string{chunkedHead + "1", "0\r", "\n0123456", "789abcdef\r", "\n3;ext=", "1\r\nabc", "\r\n0", "\r", "\n", "\r", "\n"},
		pause: 10 * time.Millisecond}, body: "0123456789abcdefabc", chunked: true},
	{name: "extensions", path: "/ext", reply: rawReply{pieces: []string{chunkedHead + "5;a=b;c\r\nhello\r\n0;last\r\n\r\n"}}, body: "hello", chunked: true},
	{name: "trailers", path: "/trailers", reply: rawReply{pieces: []string{chunkedHead + "3\r\nabc\r\n0\r\nX-Checksum: 42\r\n", "x-second: a\r\nX-Second: b\r\n\r\n"},
		pause: 10 * time.Millisecond}, body: "abc", trailer: http.Header{"X-Checksum": {"42"}, "X-Second": {"a", "b"}}, chunked: true},
	{name: "announced trailers", path: "/announced", reply: rawReply{pieces: []string{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: x-sum, X-Other\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"}},
		body: "ok", trailer: http.Header{"X-Sum": {"1"}, "X-Other": {"2"}}, chunked: true},
	{name: "announced trailers after an empty body", path: "/announced-empty", reply: rawReply{pieces: []string{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 1\r\n\r\n"}},
		trailer: http.Header{"X-Sum": {"1"}}, chunked: true},
	{name: "empty body", path: "/empty", reply: rawReply{pieces: []string{chunkedHead + "0\r\n", "\r\n"}, pause: 10 * time.Millisecond}},
	{name: "empty body with trailers", path: "/empty-trailers", reply: rawReply{pieces: []string{chunkedHead + "0\r\nX-A: b\r\n\r\n"}}},
	{name: "HEAD", method: "HEAD", path: "/one"},
	{name: "204", path: "/204", reply: rawReply{pieces: []string{"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"}}, status: 204},
	{name: "bytes after the body", path: "/stray", reply: rawReply{pieces: []string{chunkedHead + "2\r\nok\r\n0\r\n\r\nstray"}}, body: "ok", chunked: true},
	{name: "the backend closes after it", path: "/close", reply: rawReply{pieces: []string{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"}, close: true},
		body: "ok", chunked: true},
}

// TestLoopChunked: chunked responses of several shapes, on one kept-alive connection between
// Content-Length framed ones, over plain TCP and TLS: the client gets each whole, the connection
// stays on its loop, and the backend connection is reused.
func TestLoopChunked(t *testing.T) {
	t.Parallel()
	replies := map[string]rawReply{"HEAD /one": {pieces: []string{chunkedHead}}}
	for _, s := range chunkedShapes {
		if s.reply.pieces != nil {
			replies[s.path] = s.reply
		}
	}
	for _, overTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "TLS"}[overTLS], func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			addr, conns := chunkedBackend(t, replies)
			h.apply(simple("", "chunked", addr))
			for _, pipelined := range []bool{false, true} {
				before := conns.Load()
				var rc *rawConn
				if overTLS {
					rc = h.dialTLS(t, clientTLS(tls.VersionTLS13))
				} else {
					rc = h.dial(t)
				}
				var reqs []string
				for _, s := range chunkedShapes {
					reqs = append(reqs, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n", cmp.Or(s.method, "GET")+" "+s.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
				}
				if pipelined {
					rc.send(strings.Join(reqs, ""))
				}
				for i, s := range chunkedShapes {
					if !pipelined {
						rc.send(reqs[2*i])
					}
					rc.expect("GET", 200, "small")
					if !pipelined {
						rc.send(reqs[2*i+1])
					}
					resp, body := rc.read(cmp.Or(s.method, "GET"))
					te := len(resp.TransferEncoding) > 0
					if resp.StatusCode != cmp.Or(s.status, 200) || body != s.body || te != s.chunked || !te && resp.ContentLength > 0 {
						t.Fatalf("%s (pipelined %v): %d %q, chunked %v, length %d; want %d %q, chunked %v",
							s.name, pipelined, resp.StatusCode, body, te, resp.ContentLength, cmp.Or(s.status, 200), s.body, s.chunked)
					}
					if !te && s.method != "HEAD" && resp.StatusCode == 200 && resp.ContentLength != 0 {
						t.Fatalf("%s: an empty body goes with Content-Length 0, got %d", s.name, resp.ContentLength)
					}
					if fmt.Sprint(resp.Trailer) != fmt.Sprint(s.trailer) && (len(resp.Trailer) > 0 || len(s.trailer) > 0) {
						t.Fatalf("%s: trailers %v, want %v", s.name, resp.Trailer, s.trailer)
					}
					if got := resp.Header.Get("Server"); got == "" {
						t.Fatalf("%s: no Server field", s.name)
					}
				}
				rc.small()
				if n := h.looped(); n != 1 {
					t.Fatalf("pipelined %v: %d connections on the loops, want the client's", pipelined, n)
				}
				// A backend connection serves the responses up to /stray's, which leaves it unusable,
				// another those up to /close's, which closes it, and a third the last one.
				if n := conns.Load() - before; n > 3 {
					t.Errorf("pipelined %v: the backend accepted %d connections, want at most 3: the chunked responses' connections were not reused", pipelined, n)
				}
				rc.c.Close()
				waitFor(t, func() bool { return h.looped() == 0 })
			}
			if _, handed := h.fastStats(); handed != 0 {
				t.Errorf("%d connections handed to net/http, want none", handed)
			}
		})
	}
}

// small sends a GET that chunkedBackend answers with Content-Length and checks the answer.
func (rc *rawConn) small() {
	rc.t.Helper()
	rc.send("GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.expect("GET", 200, "small")
}

// TestLoopChunkedFallback: what the loop leaves to a goroutine is answered there: a chunked body to
// an HTTP/1.0 client, a chunked body without Content-Type, a Trailer field net/http refuses.
func TestLoopChunkedFallback(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	addr, _ := chunkedBackend(t, map[string]rawReply{
		"/chunked":  {pieces: []string{chunkedHead + "2\r\nok\r\n0\r\n\r\n"}},
		"/announce": {pieces: []string{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Sum, content-length\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n"}},
		"/untyped":  {pieces: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<html\r\n0\r\n\r\n"}},
	})
	h.apply(simple("", "chunked", addr))
	for _, tc := range []struct {
		name, req string
		status    int
		body      string
		check     func(*http.Response) bool
	}{
		{"HTTP/1.0 client", "GET /chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", 200, "ok", func(r *http.Response) bool { return len(r.TransferEncoding) == 0 }},
		{"no Content-Type", "GET /untyped HTTP/1.1\r\nHost: x\r\n\r\n", 200, "<html", func(r *http.Response) bool { return r.Header.Get("Content-Type") != "" }},
		{"Content-Length announced as a trailer", "GET /announce HTTP/1.1\r\nHost: x\r\n\r\n", 502, "Bad Gateway: the backend endpoint failed\n", func(r *http.Response) bool { return true }},
	} {
		rc := h.dial(t)
		rc.small() // on the loop
		rc.send(tc.req)
		resp, body := rc.read("GET")
		if resp.StatusCode != tc.status || body != tc.body || !tc.check(resp) {
			t.Errorf("%s: %d %q, header %v, trailer %v", tc.name, resp.StatusCode, body, resp.Header, resp.Trailer)
		}
		rc.c.Close()
	}
}

// TestLoopChunkedBackpressure: a client that reads an 8 MiB chunked response slowly gets it whole,
// and its connection stays on the loop for the next request.
func TestLoopChunkedBackpressure(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := startBackend(t, "chunked", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big-chunked" {
			io.WriteString(w, "small")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		body := loopBody()
		for off := 0; off < len(body); off += 100 << 10 {
			_, _ = w.Write(body[off:min(off+100<<10, len(body))])
			w.(http.Flusher).Flush()
		}
	})
	h.apply(simple("", "chunked", be.addr))
	slow := dialSmallWindow(t, strings.TrimPrefix(h.httpURL, "http://"), nil)
	rc := &rawConn{t: t, c: slow, br: bufio.NewReaderSize(slow, 4096)}
	rc.send("GET /big-chunked HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 || len(resp.TransferEncoding) == 0 {
		t.Fatalf("GET /big-chunked: %v, %+v; want a chunked 200", err, resp)
	}
	// Others are served meanwhile, by the same loop or another.
	other := h.dial(t)
	got, sum := readSlowly(t, resp.Body, 1<<20, 200*time.Millisecond)
	other.send("GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
	other.expect("GET", 200, "small")
	if want := sha256.Sum256(loopBody()); got != int64(len(loopBody())) || !bytes.Equal(sum, want[:]) {
		t.Fatalf("the slow client got %d bytes (hash %x), want %d (hash %x)", got, sum, len(loopBody()), want)
	}
	rc.send("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.expect("GET", 200, "small")
	if n := h.looped(); n != 2 {
		t.Errorf("%d connections on the loops, want both clients'", n)
	}
}

// TestLoopChunkedBroken: a chunked body the backend cuts short, frames wrongly or stalls on ends the
// client connection after what was relayed, as a short Content-Length body does; other clients
// and the backend's other connections go on.
func TestLoopChunkedBroken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	cases := []struct {
		name  string
		reply rawReply
		head  bool // the client gets the head (and a part of the body) before the end
	}{
		{"the backend closes in a chunk", rawReply{pieces: []string{chunkedHead + "5\r\nhel"}, close: true}, true},
		{"the backend closes between chunks", rawReply{pieces: []string{chunkedHead + "5\r\nhello\r\n"}, close: true}, true},
		{"the backend closes in the trailers", rawReply{pieces: []string{chunkedHead + "5\r\nhello\r\n0\r\nX-A: b\r\n"}, close: true}, true},
		{"an invalid first chunk size", rawReply{pieces: []string{chunkedHead + "zz\r\nhello\r\n0\r\n\r\n"}}, false},
		{"an invalid chunk size later", rawReply{pieces: []string{chunkedHead + "5\r\nhello\r\n", "5x\r\nhello\r\n0\r\n\r\n"}, pause: 20 * time.Millisecond}, true},
		{"an overflowing chunk size", rawReply{pieces: []string{chunkedHead + "5\r\nhello\r\n", "fffffffffffffffff\r\n"}, pause: 20 * time.Millisecond}, true},
		{"no CRLF after the data", rawReply{pieces: []string{chunkedHead + "5\r\nhelloXX0\r\n\r\n"}}, true},
		{"a chunk-size line too long", rawReply{pieces: []string{chunkedHead + "5;" + strings.Repeat("e", 5000) + "\r\nhello\r\n0\r\n\r\n"}}, false},
		{"the backend stalls in a chunk", rawReply{pieces: []string{chunkedHead + "5\r\nhel", "lo\r\n0\r\n\r\n"}, pause: 2 * time.Second}, true},
	}
	replies := map[string]rawReply{}
	for i, tc := range cases {
		replies[fmt.Sprintf("/broken%d", i)] = tc.reply
	}
	addr, _ := chunkedBackend(t, replies)
	h.apply(simple("", "chunked", addr))
	for i, tc := range cases {
		rc := h.dial(t)
		rc.small()
		rc.send(fmt.Sprintf("GET /broken%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
		if !tc.head {
			if err == nil {
				t.Errorf("%s: got a response %d, want the connection closed", tc.name, resp.StatusCode)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: reading the head: %v", tc.name, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		if err == nil || !strings.HasPrefix("hello", string(body)) {
			t.Errorf("%s: read %q and %v, want a part of %q and the end of the connection", tc.name, body, err, "hello")
		}
		// The client's reader may have stopped before the end of what came (in the trailers).
		rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, rc.br); err != nil {
			t.Errorf("%s: the connection did not end: %v", tc.name, err)
		}
	}
	waitFor(t, func() bool { return h.looped() == 0 })
	// The proxy goes on with the backend.
	rc := h.dial(t)
	rc.small()
}
