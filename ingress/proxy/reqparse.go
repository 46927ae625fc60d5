package proxy

import (
	"bytes"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The client-side fast path parses request heads itself, from bytes still in the connection's read
// buffer: only a head it fully understands is consumed. Anything else, well-formed or not (absolute
// URIs, folded lines, bare LFs, Transfer-Encoding, Expect, Upgrade, duplicate Host, oversize heads),
// is left in the buffer for net/http, which answers it (400 included) as it always has.

// headParse is the outcome of parseHead.
type headParse int

const (
	headIncomplete headParse = iota // no end of the head in the bytes yet
	headOK                          // a plain request the fast path serves
	headSlow                        // for net/http
)

// reqHead is one parsed request head. Its strings share one allocation, the head's bytes.
type reqHead struct {
	method, target string
	minor          int    // HTTP/1.minor
	host           string // the Host header ("" if none, HTTP/1.0 only)
	contentLength  int64  // 0 when absent
	close          bool   // the connection ends after this request
	size           int    // bytes of the head, through its empty line
	fields         string // the header field lines, CRLF between them, for the direct lane
	header         http.Header
	vals           []string // backing of header's single values
}

// proto is the request's protocol as http.Request.Proto names it.
func (h *reqHead) proto() string {
	if h.minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// headEnd returns the length of the head in b (through the CRLF CRLF), or -1.
func headEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return -1
}

// bareLF reports a head whose lines may end in bare LFs, which net/http's reader takes.
func bareLF(b []byte) bool { return bytes.Contains(b, []byte("\n\n")) }

// parseHead parses the head at the start of b into h, reusing h's header map.
func parseHead(b []byte, h *reqHead) headParse {
	return parseHeadWith(b, h, func(b []byte) string { return string(b) })
}

// parseHeadWith is parseHead with the head's bytes made a string by str: the event loop's strings
// share its buffer, which holds the head until the request is done.
func parseHeadWith(b []byte, h *reqHead, str func([]byte) string) headParse {
	n := headEnd(b)
	if n < 0 {
		if bareLF(b) {
			return headSlow // a bare LF ends lines: net/http's reader decides
		}
		return headIncomplete
	}
	s := str(b[:n-2]) // every line with its CRLF, without the empty one
	h.size = n
	line, rest, _ := strings.Cut(s, "\r\n")
	h.fields = rest
	if !h.requestLine(line) {
		return headSlow
	}
	var ok bool
	if h.vals, ok = parseFields(rest, h.header, h.vals[:0]); !ok {
		return headSlow
	}
	hdr := h.header
	for _, k := range [...]string{"Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings"} {
		if _, ok := hdr[k]; ok {
			return headSlow
		}
	}
	hosts, lengths := hdr["Host"], hdr["Content-Length"]
	h.host, h.contentLength = "", 0
	if len(hosts) == 1 {
		h.host = hosts[0]
	}
	if len(lengths) == 1 {
		if h.contentLength, ok = parseLength(lengths[0]); !ok {
			return headSlow
		}
	}
	if len(hosts) > 1 || len(lengths) > 1 || (len(hosts) == 0 && h.minor == 1) || (len(hosts) == 1 && !httpguts.ValidHostHeader(h.host)) {
		return headSlow
	}
	closeTok, keepAlive, upgrade := connectionTokens(hdr["Connection"])
	if upgrade {
		return headSlow
	}
	h.close = closeTok || (h.minor == 0 && !keepAlive)
	// As net/http: Host moves out of the header map, and an HTTP/1.0 cache directive is also given
	// as HTTP/1.1's.
	delete(h.header, "Host")
	if p, ok := h.header["Pragma"]; ok && len(p) == 1 && p[0] == "no-cache" {
		if _, ok := h.header["Cache-Control"]; !ok {
			h.header["Cache-Control"] = []string{"no-cache"}
		}
	}
	return headOK
}

// parseFields parses header field lines (each ending in CRLF but the last) into hdr, cleared first,
// with canonical keys and single values backed by vals. It fails on anything net/http's reader would
// refuse or treat specially (folded lines, invalid names or values).
func parseFields(rest string, hdr http.Header, vals []string) ([]string, bool) {
	clear(hdr)
	for rest != "" {
		var line string
		line, rest, _ = strings.Cut(rest, "\r\n")
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return vals, false // also folded lines, which start with a space
		}
		// Only spaces and tabs are trimmed, so that a stray CR or LF fails the value's validation.
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return vals, false
		}
		key := canonicalKey(name)
		if v, ok := hdr[key]; ok {
			hdr[key] = append(v[:len(v):len(v)], value)
			continue
		}
		vals = append(vals, value)
		hdr[key] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	return vals, true
}

// trimOWS trims the spaces and tabs around a field value.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// connectionTokens reports the close, keep-alive and upgrade options of Connection header values.
func connectionTokens(values []string) (closeTok, keepAlive, upgrade bool) {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			tok = textproto.TrimString(tok)
			switch {
			case strings.EqualFold(tok, "close"):
				closeTok = true
			case strings.EqualFold(tok, "keep-alive"):
				keepAlive = true
			case strings.EqualFold(tok, "upgrade"):
				upgrade = true
			}
		}
	}
	return closeTok, keepAlive, upgrade
}

// requestLine parses "METHOD /target HTTP/1.x"; only origin-form targets are for the fast path.
func (h *reqHead) requestLine(line string) bool {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || !validMethod(method) || target == "" || target[0] != '/' {
		return false
	}
	switch proto {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		return false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f || c == '#' {
			return false
		}
	}
	h.method, h.target = internMethod(method), target
	return true
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// internMethod returns the common methods as constants, so that they do not keep the head's bytes.
func internMethod(m string) string {
	switch m {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodOptions:
		return http.MethodOptions
	case http.MethodPatch:
		return http.MethodPatch
	}
	return m
}

// commonKeys are header names clients send in every request, canonical, so that a head in another
// case does not allocate its key.
var commonKeys = map[string]string{}

func init() {
	for _, k := range []string{"Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Connection",
		"Content-Length", "Content-Type", "Cookie", "Authorization", "Referer", "Origin", "Cache-Control", "Pragma",
		"If-None-Match", "If-Modified-Since", "Range", "Transfer-Encoding", "Expect", "Upgrade", "Te", "Keep-Alive",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-Ip", "X-Request-Id",
		"Server", "Date", "Last-Modified", "Etag", "Accept-Ranges", "Expires", "Vary", "Set-Cookie", "Location",
		"Content-Encoding", "Content-Range", "Age", "Www-Authenticate"} {
		commonKeys[strings.ToLower(k)] = k
	}
}

// canonicalKey is textproto.CanonicalMIMEHeaderKey without its allocation for keys already canonical
// or common.
func canonicalKey(name string) string {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			var lower [32]byte
			if len(name) <= len(lower) {
				for j := 0; j < len(name); j++ {
					b := name[j]
					if 'A' <= b && b <= 'Z' {
						b += 'a' - 'A'
					}
					lower[j] = b
				}
				if k, ok := commonKeys[string(lower[:len(name)])]; ok {
					return k
				}
			}
			return textproto.CanonicalMIMEHeaderKey(name)
		}
		upper = c == '-'
	}
	return name
}

// parseLength parses a Content-Length value: digits only, as net/http accepts.
func parseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
