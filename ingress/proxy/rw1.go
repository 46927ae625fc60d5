package proxy

import (
	"bufio"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// fastRW is the fast path's http.ResponseWriter. It writes what net/http's would (status line, the
// handler's headers, Date, sniffed Content-Type, Content-Length or chunked framing, Connection) into
// the connection's buffer, so that a small response leaves in one write when the handler returns.
type fastRW struct {
	bw   *bufio.Writer
	hdr  http.Header
	body *bodyReader
	req  *http.Request

	code        int
	wroteHeader bool
	committed   bool // the head is in bw
	chunked     bool
	noBody      bool  // HEAD, 1xx, 204, 304
	cl          int64 // declared Content-Length, -1 unknown
	written     int64
	pending     []byte // body of unknown length held back before the head
	closeAfter  bool
	scratch     [32]byte
}

var _ http.Flusher = (*fastRW)(nil)

func (w *fastRW) reset(r *http.Request) {
	clear(w.hdr)
	w.req, w.code, w.wroteHeader, w.committed, w.chunked, w.noBody = r, 0, false, false, false, false
	w.cl, w.written, w.pending, w.closeAfter = -1, 0, w.pending[:0], r.Close
}

func (w *fastRW) Header() http.Header { return w.hdr }

// suppressed reports the fields net/http's server drops from a response with status code, which
// has no body (RFC 9110 8.6, and RFC 9110 15.4.5 for a 304's Content-Type).
func suppressed(code int, key string) bool {
	switch key {
	case "Content-Length", "Transfer-Encoding":
		return !bodyAllowed(code)
	case "Content-Type":
		return code == http.StatusNotModified
	}
	return false
}

func bodyAllowed(code int) bool {
	return !(code >= 100 && code < 200 || code == http.StatusNoContent || code == http.StatusNotModified)
}

func (w *fastRW) WriteHeader(code int) {
	if w.wroteHeader || code >= 100 && code < 200 {
		return // interim responses are not relayed by the handler
	}
	w.wroteHeader, w.code = true, code
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowed(code)
	if v := w.hdr["Content-Length"]; len(v) > 0 {
		if n, ok := parseLength(v[0]); ok && len(v) == 1 {
			w.cl = n
		} else {
			delete(w.hdr, "Content-Length")
		}
	}
}

func (w *fastRW) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			if bodyAllowed(w.code) {
				w.written += int64(len(p)) // the length a GET would have, as net/http announces it
			}
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	var tooLong bool
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		p, tooLong = p[:w.cl-w.written], true
	}
	w.written += int64(len(p))
	if !w.committed {
		// A body of unknown length is held back to send it with its length if it ends soon; the
		// start of any body is held back until it is enough to sniff its type, as net/http's
		// buffered writer does, since one Write may carry only the first bytes of what a backend sent.
		if w.cl < 0 && len(w.pending)+len(p) <= pendingMax || w.sniffing() && len(w.pending)+len(p) < sniffLen {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.commit(false, p)
	}
	err := w.writeBody(p)
	if err == nil && tooLong {
		err = http.ErrContentLength
	}
	return len(p), err
}

func (w *fastRW) writeBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if w.chunked {
		w.bw.Write(strconv.AppendInt(w.scratch[:0], int64(len(p)), 16))
		w.bw.WriteString("\r\n")
		w.bw.Write(p)
		_, err := w.bw.WriteString("\r\n")
		return err
	}
	_, err := w.bw.Write(p)
	return err
}

// sniffLen is how much of a body http.DetectContentType looks at.
const sniffLen = 512

// sniffing reports whether the head is to get a Content-Type sniffed from the body.
func (w *fastRW) sniffing() bool {
	_, ok := w.hdr["Content-Type"]
	return !ok && !w.noBody && w.hdr.Get("Content-Encoding") == ""
}

// Flush sends the head and what is buffered; a body of unknown length is chunked from then on.
func (w *fastRW) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(false, nil)
	}
	_ = w.bw.Flush()
}

// finish completes the response once the handler returned and sends it.
func (w *fastRW) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true, nil)
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		w.writeTrailers()
		w.bw.WriteString("\r\n")
	}
	if w.cl >= 0 && !w.noBody && w.written < w.cl {
		w.closeAfter = true // the client waits for the rest of the declared body
	}
	return w.bw.Flush()
}

// commit writes the head, then the held-back body. final: the handler has returned, so a held-back
// body is all of it and gets a Content-Length. next is the body being written, for sniffing.
func (w *fastRW) commit(final bool, next []byte) {
	w.committed = true
	computedLength := -1
	_, trailers := w.hdr["Trailer"]
	if w.noBody && final && w.cl < 0 && w.written > 0 && !trailers {
		computedLength = int(w.written) // HEAD
	} else if !w.noBody && w.cl < 0 {
		switch {
		case final && !trailers:
			computedLength = len(w.pending)
		case w.req.ProtoMinor >= 1:
			w.chunked = true
		default:
			w.closeAfter = true // HTTP/1.0: the end of the body is the end of the connection
		}
	}
	if w.body.left > maxDrain {
		w.closeAfter = true // the unread request body is too long to skip
	}
	if c := w.hdr["Connection"]; len(c) > 0 {
		for _, v := range c {
			if strings.Contains(strings.ToLower(v), "close") {
				w.closeAfter = true
			}
		}
		delete(w.hdr, "Connection")
	}
	bw := w.bw
	writeStatusLine(bw, w.req.ProtoMinor, w.code)
	for k, vs := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) || suppressed(w.code, k) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	if _, ok := w.hdr["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate(time.Now()))
		bw.WriteString("\r\n")
	}
	if w.sniffing() {
		first := w.pending
		if len(first) == 0 {
			first = next
		} else if len(first) < sniffLen && len(next) > 0 {
			first = append(first[:len(first):len(first)], next[:min(len(next), sniffLen-len(first))]...)
		}
		if len(first) > 0 {
			writeField(bw, "Content-Type", http.DetectContentType(first))
		}
	}
	if computedLength >= 0 && (computedLength > 0 || w.req.Method != http.MethodHead) {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(w.scratch[:0], int64(computedLength), 10))
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	writeConnection(bw, w.req.ProtoMinor, w.closeAfter)
	bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		_ = w.writeBody(w.pending)
		w.pending = w.pending[:0]
	}
}

// writeStatusLine writes the status line as net/http's server does, in the request's HTTP version
// and with its own reason phrase.
func writeStatusLine(bw *bufio.Writer, minor, code int) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	if code == http.StatusOK {
		bw.WriteString("200 OK\r\n")
		return
	}
	var scratch [20]byte
	bw.Write(strconv.AppendInt(scratch[:0], int64(code), 10))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

// writeConnection writes the Connection field net/http's server sends: close when an HTTP/1.1
// connection ends after the response (HTTP/1.0's end by default), keep-alive when an HTTP/1.0 one
// does not.
func writeConnection(bw *bufio.Writer, minor int, closeAfter bool) {
	switch {
	case closeAfter && minor > 0:
		bw.WriteString("Connection: close\r\n")
	case !closeAfter && minor == 0:
		bw.WriteString("Connection: keep-alive\r\n")
	}
}

// writeTrailers writes the trailers the handler set after the body: those announced in the Trailer
// header by name, others with http.TrailerPrefix.
func (w *fastRW) writeTrailers() {
	for _, list := range w.hdr["Trailer"] {
		for k := range strings.SplitSeq(list, ",") {
			k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
			for _, v := range w.hdr[k] {
				writeField(w.bw, k, v)
			}
		}
	}
	for k, vs := range w.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) {
			for _, v := range vs {
				writeField(w.bw, name, v)
			}
		}
	}
}

// headerNewlines replaces line breaks in values as net/http does, so that no value can add a field.
var headerNewlines = strings.NewReplacer("\n", " ", "\r", " ")

func writeField(bw *bufio.Writer, k, v string) {
	if strings.IndexByte(v, '\n') >= 0 || strings.IndexByte(v, '\r') >= 0 {
		v = headerNewlines.Replace(v)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(v))
	bw.WriteString("\r\n")
}

// httpDate is now in http.TimeFormat, formatted once a second.
func httpDate(now time.Time) string {
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.s
	}
	d := &cachedDate{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

type cachedDate struct {
	sec int64
	s   string
}

var dateCache atomic.Pointer[cachedDate]
