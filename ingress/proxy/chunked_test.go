package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// feedChunked gives a chunkedBody the pieces one after the other as a loop's reads would, scanning
// what is buffered after each; it returns the bytes consumed and the data among them, whether the
// body ended and the error.
func feedChunked(pieces []string) (consumed int, data int64, done bool, err error) {
	var p chunkedBody
	var buf []byte
	for _, piece := range pieces {
		buf = append(buf, piece...)
		n, d, err := p.scan(buf[consumed:])
		consumed, data = consumed+n, data+d
		if err != nil || p.done() {
			return consumed, data, p.done(), err
		}
	}
	return consumed, data, p.done(), nil
}

// netHTTPChunked is what net/http's client makes of body as a chunked response body: an error,
// or the data and the trailer fields.
func netHTTPChunked(body string) (string, http.Header, error) {
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+body)), nil)
	if err != nil {
		return "", nil, err
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.Trailer, err
}

func TestChunkedBody(t *testing.T) {
	after := "HTTP/1.1 200 OK\r\n" // the next response, on a kept connection
	for _, tc := range []struct {
		name, in string
		end      int   // bytes of the body in in, -1 for a body that is malformed, 0 for one not complete
		data     int64 // data bytes in the body
		err      error
		// differs: net/http takes what this parser refuses (or the reverse); the case says why.
		differs bool
	}{
		{name: "one chunk", in: "5\r\nhello\r\n0\r\n\r\n", end: 15, data: 5},
		{name: "empty body", in: "0\r\n\r\n", end: 5},
		{name: "two chunks", in: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", end: 26, data: 11},
		{name: "upper and lower hex", in: "A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", end: 35, data: 20},
		{name: "leading zeros", in: "0005\r\nhello\r\n000\r\n\r\n", end: 20, data: 5},
		{name: "extensions", in: "5;name=value;x\r\nhello\r\n0;last=\"1\"\r\n\r\n", end: 37, data: 5},
		{name: "whitespace before CRLF", in: "5 \t\r\nhello\r\n0 \r\n\r\n", end: 18, data: 5},
		{name: "trailers", in: "3\r\nabc\r\n0\r\nX-Checksum: 42\r\nx-empty:\r\nX-Tab:\tv\t\r\n\r\n", end: 50, data: 3},
		{name: "followed by the next response", in: "2\r\nok\r\n0\r\n\r\n" + after, end: 12, data: 2},
		{name: "trailers followed by the next response", in: "0\r\nA: b\r\n\r\n" + after, end: 11},
		{name: "chunk data with CR LF inside", in: "4\r\n\r\n\r\n\r\n0\r\n\r\n", end: 14, data: 4},
		{name: "sixteen hex digits", in: "000000000000000f\r\n0123456789abcde\r\n0\r\n\r\n", end: 40, data: 15},
		{name: "not complete: in data", in: "5\r\nhel", end: 0, data: 3},
		{name: "not complete: no last chunk", in: "5\r\nhello\r\n", end: 0, data: 5},
		{name: "not complete: no empty line", in: "5\r\nhello\r\n0\r\nX-A: b\r\n", end: 0, data: 5},
		{name: "a huge chunk", in: "ffffffffffffffff\r\nabc", end: 0, data: 3},

		{name: "empty size", in: "\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkSize},
		{name: "not hex", in: "5x\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkSize},
		{name: "leading space", in: " 5\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkSize},
		{name: "sign", in: "+5\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkSize},
		{name: "0x prefix", in: "0x5\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkSize},
		{name: "seventeen hex digits", in: "00000000000000005\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkOverflow},
		{name: "overflow", in: "10000000000000000\r\n", end: -1, err: errChunkOverflow},
		{name: "bare LF after the size", in: "5\nhello\r\n0\r\n\r\n", end: -1, err: errChunkLine},
		{name: "CR inside the size line", in: "5\r;x\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkLine},
		{name: "no CRLF after data", in: "5\r\nhelloXY0\r\n\r\n", end: -1, data: 5, err: errChunkCRLF},
		{name: "LF only after data", in: "5\r\nhello\n0\r\n\r\n", end: -1, data: 5, err: errChunkCRLF},
		{name: "data longer than its size", in: "3\r\nhello\r\n0\r\n\r\n", end: -1, data: 3, err: errChunkCRLF},
		{name: "size line too long", in: "5;" + strings.Repeat("e", chunkLineMax) + "\r\nhello\r\n0\r\n\r\n", end: -1, err: errChunkLong},
		{name: "size line without end", in: "5;" + strings.Repeat("e", 2*chunkLineMax), end: -1, err: errChunkLong},
		{name: "too much non-data", in: strings.Repeat("1;"+strings.Repeat("e", 200)+"\r\nx\r\n", 100) + "0\r\n\r\n", end: -1, data: 88, err: errChunkExcess},
		{name: "trailer without colon", in: "0\r\nX-A b\r\n\r\n", end: -1, err: errTrailer},
		// net/http takes the next two, and the goroutine lane drops the field when it writes the trailers.
		{name: "trailer with an invalid name", in: "0\r\nBad Name: b\r\n\r\n", end: -1, err: errTrailer, differs: true},
		{name: "trailer with a space before the colon", in: "0\r\nX-A : b\r\n\r\n", end: -1, err: errTrailer, differs: true},
		{name: "trailer with an empty name", in: "0\r\n: b\r\n\r\n", end: -1, err: errTrailer},
		{name: "trailer with a control character", in: "0\r\nX-A: a\x00b\r\n\r\n", end: -1, err: errTrailer},
		{name: "trailer with a bare LF", in: "0\r\nX-A: b\n\r\n", end: -1, err: errTrailer},
		{name: "trailers ended by a bare LF", in: "0\r\n\n0\r\n\r\n", end: -1, err: errTrailer, differs: true}, // textproto takes LF as a line end
		{name: "folded trailer", in: "0\r\nX-A: a\r\n b\r\n\r\n", end: -1, err: errTrailer, differs: true},     // textproto unfolds it
		// net/http's limit is its reader's buffer: 4 KiB here, 16 KiB on the goroutine lane.
		{name: "trailer section too long", in: "0\r\n" + strings.Repeat("X-A: "+strings.Repeat("v", 100)+"\r\n", chunkTrailers/100) + "\r\n", end: -1, err: errTrailerLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how string, pieces []string) {
				t.Helper()
				n, data, done, err := feedChunked(pieces)
				switch {
				case !errors.Is(err, tc.err):
					t.Fatalf("%s: error %v, want %v", how, err, tc.err)
				case tc.end > 0 && (!done || n != tc.end):
					t.Fatalf("%s: consumed %d bytes (done %v), want the body's %d", how, n, done, tc.end)
				case tc.end <= 0 && done:
					t.Fatalf("%s: the body ended after %d bytes", how, n)
				case data != tc.data:
					t.Fatalf("%s: %d data bytes, want %d", how, data, tc.data)
				}
			}
			check("whole", []string{tc.in})
			for i := 1; i < len(tc.in); i++ {
				check("split", []string{tc.in[:i], tc.in[i:]})
			}
			if len(tc.in) < 1000 {
				var bytes []string
				for i := range len(tc.in) {
					bytes = append(bytes, tc.in[i:i+1])
				}
				check("byte by byte", bytes)
			}
			if tc.end == 0 {
				return // net/http would wait for more
			}
			// What net/http's client makes of the same bytes, which the goroutine lane relays.
			body, _, err := netHTTPChunked(tc.in)
			if refused := err != nil; refused != (tc.end < 0) != tc.differs {
				t.Errorf("net/http: %q, %v", body, err)
			} else if err == nil && int64(len(body)) != tc.data {
				t.Errorf("net/http read %d data bytes, want %d", len(body), tc.data)
			}
		})
	}
}

func TestParseDirectHeadChunked(t *testing.T) {
	for _, tc := range []struct {
		name, fields string
		line         string // the status line, HTTP/1.1 200 OK when empty
		fallback     bool
		trailer      string
	}{
		{name: "chunked", fields: "Transfer-Encoding: chunked"},
		{name: "in another case", fields: "transfer-encoding:  Chunked "},
		{name: "204", line: "HTTP/1.1 204 No Content", fields: "Transfer-Encoding: chunked"},
		{name: "gzip, chunked", fields: "Transfer-Encoding: gzip, chunked", fallback: true},
		{name: "two fields", fields: "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", fallback: true},
		{name: "identity", fields: "Transfer-Encoding: identity", fallback: true},
		{name: "and Content-Length", fields: "Transfer-Encoding: chunked\r\nContent-Length: 5", fallback: true},
		{name: "HTTP/1.0", line: "HTTP/1.0 200 OK", fields: "Transfer-Encoding: chunked", fallback: true},
		{name: "Trailer without chunked", fields: "Trailer: X-A\r\nContent-Length: 2", fallback: true},
		{name: "announced trailers", fields: "Trailer: x-a, X-B ,\r\nTransfer-Encoding: chunked\r\nTrailer: X-A,x-c", trailer: "X-A, X-B, X-C"},
		{name: "an empty Trailer", fields: "Trailer:\r\nTransfer-Encoding: chunked"},
		{name: "Content-Length announced", fields: "Trailer: X-A, content-length\r\nTransfer-Encoding: chunked", fallback: true},
		{name: "Trailer announced", fields: "Trailer: trailer\r\nTransfer-Encoding: chunked", fallback: true},
		{name: "an invalid name announced", fields: "Trailer: bad name\r\nTransfer-Encoding: chunked", fallback: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rh := parseDirectHead(cmpOr(tc.line, "HTTP/1.1 200 OK") + "\r\nContent-Type: text/plain\r\n" + tc.fields)
			if rh.fallback != tc.fallback || !rh.fallback && (!rh.chunked || rh.trailer != tc.trailer) {
				t.Errorf("fallback %v, chunked %v, trailer %q; want fallback %v, trailer %q", rh.fallback, rh.chunked, rh.trailer, tc.fallback, tc.trailer)
			}
		})
	}
}

// FuzzChunkedBody checks the parser against net/http's client on the same bytes, split in two reads:
// a body one takes whole, the other takes whole with the same data, and one refuses, the other
// refuses or waits for more, but for the differences TestChunkedBody lists (trailer fields
// net/http's textproto takes and the parser does not).
func FuzzChunkedBody(f *testing.F) {
	for _, s := range []string{"5\r\nhello\r\n0\r\n\r\n", "0\r\n\r\n", "3;x=y\r\nabc\r\n0\r\nA: b\r\n\r\n", "1\r\nx\r\n", "zz\r\n", "5\r\nhelloXY", "0\r\nX: a\r\n b\r\n\r\n"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, in string, split int) {
		split = max(0, min(split, len(in)))
		n, data, done, err := feedChunked([]string{in[:split], in[split:]})
		body, _, herr := netHTTPChunked(in)
		switch {
		case done && herr != nil:
			t.Fatalf("the parser took %d bytes of %q (%d data), net/http refused it: %v", n, in, data, herr)
		case done && int64(len(body)) != data:
			t.Fatalf("the parser found %d data bytes in %q, net/http %d", data, in, len(body))
		case herr == nil && err != nil && !errors.Is(err, errTrailer) && !errors.Is(err, errTrailerLong):
			t.Fatalf("net/http took %q, the parser refused it: %v", in, err)
		case herr == nil && err == nil && !done:
			t.Fatalf("net/http took %q, the parser waits for more after %d bytes", in, n)
		}
	})
}
