package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The upstream fast path writes requests and reads the common responses itself: http.Request.Write
// sorts the header keys and http.ReadResponse builds them through net/textproto, which together
// cost more than the rest of a small exchange. What is not common (chunked or unframed bodies,
// interim responses, non-ASCII hosts, odd heads) goes through net/http as before.

// writeRequest writes out as http.Request.Write would for the requests the fast path sends (no
// trailers, a body of known length or none); it falls back to Write for the others.
func writeRequest(bw *bufio.Writer, out *http.Request, hostport string) error {
	host := out.Host
	if host == "" {
		host = hostport
	}
	if out.Close || len(out.TransferEncoding) > 0 || out.Trailer != nil || !asciiHost(host) {
		return out.Write(bw)
	}
	bw.WriteString(out.Method)
	bw.WriteByte(' ')
	bw.WriteString(out.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua, ok := out.Header["User-Agent"]; !ok {
		bw.WriteString("User-Agent: Go-http-client/1.1\r\n")
	} else if len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}
	if out.ContentLength > 0 || out.ContentLength == 0 && (out.Method == http.MethodPost || out.Method == http.MethodPut || out.Method == http.MethodPatch) {
		var b [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(b[:0], out.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	for k, vs := range out.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	if err != nil || out.Body == nil || out.ContentLength <= 0 {
		return err
	}
	n, err := io.CopyN(bw, out.Body, out.ContentLength)
	if err != nil && n < out.ContentLength {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("http: ContentLength=%d with Body length %d", out.ContentLength, n)
		}
		return err
	}
	return nil
}

// asciiHost reports whether host needs no IDNA conversion nor cleaning by net/http.
func asciiHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c >= 0x7f || c == '/' || c == '%' {
			return false
		}
	}
	return true
}

// respHead is the reusable state of readResponse on one upstream connection.
type respHead struct {
	vals []string
}

// readResponse reads a response to out from br. A response with a Content-Length (or without a body
// by its status or out's method) is parsed here; others are left in br for http.ReadResponse.
func (rh *respHead) readResponse(br *bufio.Reader, out *http.Request) (*http.Response, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, err
	}
	// A head cut short is left to net/http's reader too: it has the last word on what the bytes are.
	if b, _ := peekHead(br); b != nil {
		if resp := rh.parse(b, out); resp != nil {
			br.Discard(len(b))
			if resp.ContentLength > 0 && !(out.Method == http.MethodHead || !bodyAllowed(resp.StatusCode)) {
				resp.Body = &bodyReader{br: br, left: resp.ContentLength}
			}
			return resp, nil
		}
	}
	return http.ReadResponse(br, out)
}

// peekHead waits for a whole response head at the start of br and returns its bytes through the
// empty line, still in br. It returns nil for a head that is net/http's reader's to judge: larger
// than the buffer, with bare LF line ends, or cut short by err.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if n := headEnd(b); n >= 0 {
			return b[:n], nil
		}
		if br.Buffered() == br.Size() || bareLF(b) {
			return nil, nil
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

// parseStatusLine parses "HTTP/1.x NNN reason" for a final response; ok is false for interim
// responses and for anything net/http's reader should judge.
func parseStatusLine(line string) (code, minor int, ok bool) {
	if len(line) < 12 || strings.IndexByte(line, '\n') >= 0 || strings.IndexByte(line, '\r') >= 0 || line[:7] != "HTTP/1." || (line[7] != '1' && line[7] != '0') || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, 0, false
	}
	c, ok := parseLength(line[9:12])
	if !ok || c < 200 || c > 999 {
		return 0, 0, false
	}
	return int(c), int(line[7] - '0'), true
}

// parse parses a head; nil means it is not one for the fast path.
func (rh *respHead) parse(b []byte, out *http.Request) *http.Response {
	s := string(b[:len(b)-2])
	line, rest, _ := strings.Cut(s, "\r\n")
	code, minor, ok := parseStatusLine(line)
	if !ok {
		return nil // interim responses and garbage: net/http's loop
	}
	hdr := make(http.Header, 8)
	// The header values of successive responses share an array, each taking the next free part (the
	// header maps handed out keep theirs).
	if cap(rh.vals) < 16 {
		rh.vals = make([]string, 0, 128)
	}
	vals, ok := parseFields(rest, hdr, rh.vals)
	if !ok {
		return nil
	}
	rh.vals = vals[len(vals):]
	if _, te := hdr["Transfer-Encoding"]; te {
		return nil
	}
	resp := &http.Response{
		Status: line[9:], StatusCode: code, Proto: line[:8], ProtoMajor: 1, ProtoMinor: minor,
		Header: hdr, Request: out, Body: http.NoBody,
	}
	// The length as net/http's fixLength: a HEAD response's is its header's (-1 without), a bodiless
	// status's 0 whatever the header says, others' the header's.
	lengths := hdr["Content-Length"]
	resp.ContentLength = -1
	switch {
	case len(lengths) == 1:
		if resp.ContentLength, ok = parseLength(lengths[0]); !ok {
			return nil
		}
	case len(lengths) > 1:
		return nil
	case out.Method != http.MethodHead && bodyAllowed(resp.StatusCode):
		return nil // the body ends with the connection
	}
	if out.Method != http.MethodHead && !bodyAllowed(resp.StatusCode) {
		resp.ContentLength = 0
	}
	closeTok, keepAlive, _ := connectionTokens(hdr["Connection"])
	resp.Close = closeTok || resp.ProtoMinor == 0 && !keepAlive
	if closeTok {
		delete(hdr, "Connection") // as net/http
	}
	return resp
}
