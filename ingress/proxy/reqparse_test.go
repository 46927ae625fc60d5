package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     headParse
		host     string
		length   int64
		close    bool
	}{
		{"get", "GET /a?b=c HTTP/1.1\r\nHost: x.example:8080\r\nAccept: */*\r\n\r\n", headOK, "x.example:8080", 0, false},
		{"post", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n\r\n", headOK, "x", 12, false},
		{"1.0", "GET / HTTP/1.0\r\n\r\n", headOK, "", 0, true},
		{"1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", headOK, "", 0, false},
		{"close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n", headOK, "x", 0, true},
		{"incomplete", "GET / HTTP/1.1\r\nHost: x\r\n", headIncomplete, "", 0, false},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", headSlow, "", 0, false},
		{"no host", "GET / HTTP/1.1\r\n\r\n", headSlow, "", 0, false},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", headSlow, "", 0, false},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", headSlow, "", 0, false},
		{"expect", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", headSlow, "", 0, false},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", headSlow, "", 0, false},
		{"h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", headSlow, "", 0, false},
		{"absolute", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", headSlow, "", 0, false},
		{"folded", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", headSlow, "", 0, false},
		{"bad length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", headSlow, "", 0, false},
		{"space in name", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", headSlow, "", 0, false},
		{"control in value", "GET / HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n", headSlow, "", 0, false},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", headSlow, "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := reqHead{header: http.Header{}}
			got := parseHead([]byte(tc.in), &h)
			if got != tc.want {
				t.Fatalf("parseHead = %v, want %v", got, tc.want)
			}
			if got == headOK && (h.host != tc.host || h.contentLength != tc.length || h.close != tc.close || h.size != len(tc.in)) {
				t.Fatalf("host %q length %d close %v size %d", h.host, h.contentLength, h.close, h.size)
			}
		})
	}
}

func TestCanonicalKey(t *testing.T) {
	for _, k := range []string{"host", "HOST", "Content-Length", "x-custom-header", "X-Custom-Header", "etag", "a", "x-", "WWW-authenticate"} {
		want := http.CanonicalHeaderKey(k)
		if got := canonicalKey(k); got != want {
			t.Errorf("canonicalKey(%q) = %q, want %q", k, got, want)
		}
	}
}

// FuzzParseHead checks parseHead against net/http's request reader: whatever the bytes, it does not
// panic, and a head it takes is read the same way by http.ReadRequest.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p?q HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabc",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\nPragma: no-cache\r\n\r\n",
		"GET /%41 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX:  spaced  \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h := reqHead{header: http.Header{}}
		var fc fconn
		if parseHead(b, &h) != headOK || !fc.parseURL(h.target) {
			return // left to net/http
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("parseHead took %q, net/http refuses it: %v", b, err)
		}
		if r.Method != h.method || r.RequestURI != h.target || r.Host != h.host || r.ContentLength != h.contentLength || r.Close != h.close || r.ProtoMinor != h.minor {
			t.Fatalf("%q: net/http reads %s %s host %q length %d close %v minor %d; parseHead %s %s host %q length %d close %v minor %d",
				b, r.Method, r.RequestURI, r.Host, r.ContentLength, r.Close, r.ProtoMinor, h.method, h.target, h.host, h.contentLength, h.close, h.minor)
		}
		if !reflect.DeepEqual(map[string][]string(r.Header), map[string][]string(h.header)) {
			t.Fatalf("%q: net/http reads header %v, parseHead %v", b, r.Header, h.header)
		}
		if !reflect.DeepEqual(*r.URL, fc.url) {
			t.Fatalf("%q: net/http reads URL %#v, parseURL %#v", b, *r.URL, fc.url)
		}
	})
}

// FuzzReadResponse checks the upstream response reader against http.ReadResponse the same way.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 204\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		var rh respHead
		got, gerr := rh.readResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: method})
		want, werr := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: method})
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: error %v, net/http's %v", b, gerr, werr)
		}
		if gerr != nil {
			return
		}
		gb, gerr := io.ReadAll(got.Body)
		wb, werr := io.ReadAll(want.Body)
		if got.StatusCode != want.StatusCode || got.Status != want.Status || got.ContentLength != want.ContentLength || got.Close != want.Close ||
			got.ProtoMinor != want.ProtoMinor || !reflect.DeepEqual(got.Header, want.Header) || !bytes.Equal(gb, wb) || (gerr == nil) != (werr == nil) {
			t.Fatalf("%q:\n got %d %q length %d close %v %v body %q %v\nwant %d %q length %d close %v %v body %q %v", b,
				got.StatusCode, got.Status, got.ContentLength, got.Close, got.Header, gb, gerr,
				want.StatusCode, want.Status, want.ContentLength, want.Close, want.Header, wb, werr)
		}
	})
}

func TestWriteRequestMatchesNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		method, target, host, body string
		hdr                        http.Header
	}{
		{"GET", "/a?b", "x.example", "", http.Header{"Accept": {"*/*"}, "User-Agent": {""}, "X-Forwarded-For": {"192.0.2.1"}}},
		{"POST", "/", "x", "body", http.Header{"User-Agent": {"curl"}, "Content-Length": {"4"}}},
		{"DELETE", "/d", "x", "", http.Header{"X-Multi": {"a", "b"}}},
		{"GET", "/", "", "", http.Header{}},
	} {
		mk := func() *http.Request {
			r, _ := http.NewRequest(tc.method, "http://192.0.2.9:80"+tc.target, nil)
			r.Host, r.Header = tc.host, tc.hdr
			if tc.body != "" {
				r.Body, r.ContentLength = io.NopCloser(strings.NewReader(tc.body)), int64(len(tc.body))
			}
			return r
		}
		var got, want bytes.Buffer
		bw := bufio.NewWriter(&got)
		if err := writeRequest(bw, mk(), "192.0.2.9:80"); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		if err := mk().Write(&want); err != nil {
			t.Fatal(err)
		}
		g, _ := http.ReadRequest(bufio.NewReader(&got))
		w, _ := http.ReadRequest(bufio.NewReader(&want))
		gb, _ := io.ReadAll(g.Body)
		wb, _ := io.ReadAll(w.Body)
		if g.Method != w.Method || g.RequestURI != w.RequestURI || g.Host != w.Host || g.ContentLength != w.ContentLength ||
			!reflect.DeepEqual(g.Header, w.Header) || !bytes.Equal(gb, wb) {
			t.Errorf("%s %s: wrote %s %s %q %d %v %q; net/http %s %s %q %d %v %q", tc.method, tc.target,
				g.Method, g.RequestURI, g.Host, g.ContentLength, g.Header, gb, w.Method, w.RequestURI, w.Host, w.ContentLength, w.Header, wb)
		}
	}
}
