package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/baregate/baregate/ingress/route"
)

// The direct lane: a request that asks nothing of its route but forwarding (no annotation beyond
// ingress-nginx's defaults, a bodiless idempotent method, a path that needs no escaping) is written
// to the backend field by field from the bytes it arrived in, and the backend's response head goes
// back the same way, without http.Request, http.Header or http.Response: building and walking those
// maps cost more than the rest of a small exchange. The bytes on both wires are those the handler
// sends (ingress/lanes_test.go compares them); a response head the lane does not fully understand
// (no Content-Length, 1xx, fields net/http would refuse) is finished by the handler's respond, and so
// is a chunked one, which only the event loop relays itself.

// directOK reports whether the request h can take the direct lane to rt.
func (s *ConnServer) directOK(h *reqHead, st *state, rt *route.Route) bool {
	if s.h.p.opts.DisableFastPath || rt == nil || rt.Canary != nil || h.contentLength != 0 || !idempotent(h.method) {
		return false
	}
	if path, _, _ := strings.Cut(h.target, "?"); !plainPath(path) {
		return false // the handler sends net/url's form of an escaped path
	}
	if pol := rt.Policy; pol != nil && (!pol.Plain || rt.TLS && !s.h.tls && pol.Nginx.SSLRedirect) {
		return false
	}
	pl := st.pools[rt.Backend.ID]
	return len(pl.eps) > 0 && !pl.h2c && pl.conns == nil
}

// direct forwards the request on the direct lane, balancing and retrying as handler.forward does;
// it returns whether the connection may serve another request.
func (fc *fconn) direct(st *state, rt *route.Route, start time.Time) bool {
	h := fc.s.h
	p := h.p
	pl, bs := st.pools[rt.Backend.ID], st.backends[rt.Backend.ID]
	to := p.timeouts
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	attempts := min(p.opts.Retries+1, len(pl.eps))
	now := start // a few microseconds old: good enough for passive health and the pool
	for {
		if len(tried) > 0 {
			now = time.Now()
		}
		ep := pl.pick(p.opts.Balance, tried, now)
		if ep == nil {
			break
		}
		tried = append(tried, ep)
		ep.inflight.Add(1)
		c, rh, err := fc.exchangeDirect(ep, to, now)
		if err == nil {
			o, keep := fc.respondDirect(st, rt, c, ep, &rh)
			ep.inflight.Add(-1)
			h.record(st.routes[rt.ID], rt, fc.reqLine(), o, time.Since(start))
			return keep && !o.aborted
		}
		ep.inflight.Add(-1)
		bs.upstreamErrors.Add(1)
		var de *dialError
		if errors.As(err, &de) {
			ep.downUntil.Store(now.Add(p.opts.PassiveHealthTimeout).UnixNano())
		}
		if len(tried) < attempts { // every request of this lane is idempotent
			bs.retries.Add(1)
			continue
		}
		p.opts.Logger.V(2).Info("Upstream request failed", "upstream", ep.hostport, "err", err)
		return fc.answer(st, rt, start, ep.hostport, failureCode(err), "the backend endpoint failed")
	}
	return fc.answer(st, rt, start, "", http.StatusBadGateway, "no backend endpoint could be reached")
}

// answer sends a plain error answer through the handler's writer (with servePlain's HSTS field)
// and records it.
func (fc *fconn) answer(st *state, rt *route.Route, start time.Time, upstream string, code int, msg string) bool {
	keep := fc.respondWith(func(w *fastRW, _ *http.Request) bool {
		if hsts := fc.hsts(rt); hsts != nil {
			w.Header()["Strict-Transport-Security"] = hsts
		}
		fc.s.h.plain(w, code, msg)
		return false
	})
	fc.s.h.record(st.routes[rt.ID], rt, fc.reqLine(), outcome{code: code, upstream: upstream}, time.Since(start))
	return keep
}

func (fc *fconn) reqLine() reqLine {
	return reqLine{fc.remote, fc.head.method, fc.head.host, fc.head.target, fc.head.proto()}
}

// exchangeDirect sends the request to ep on a pooled connection or a new one and reads the response
// head. A reused connection that the backend closed while it sat idle is replaced by a new one
// once, as roundTrip1 does.
func (fc *fconn) exchangeDirect(ep *endpoint, to timeouts, now time.Time) (*h1Conn, directHead, error) {
	p := fc.s.h.p
	for attempt := 0; ; attempt++ {
		c, reused, err := p.upstreamConn(context.Background(), ep, to, now)
		if err != nil {
			return nil, directHead{}, err
		}
		writeDirect(c.bw, &fc.head, fc.s.h, fc.remote, ep.hostport)
		var rh directHead
		if err = c.bw.Flush(); err != nil {
			err = &writeError{err}
		} else {
			rh, err = readDirectHead(c.br)
		}
		if err == nil {
			return c, rh, nil
		}
		c.c.Close()
		if !reused || attempt > 0 || !resendable(err, fc.head.method) {
			return nil, directHead{}, err
		}
	}
}

// writeDirect writes the head of h for the backend as writeRequest writes what handler.outgoing
// makes of the request: hop-by-hop fields and those named by Connection dropped, the forwarding
// fields replaced, names in canonical form. remote is the client's address.
func writeDirect(bw *bufio.Writer, h *reqHead, hd *handler, remote, hostport string) {
	trust := hd.p.opts.TrustForwardedHeaders
	hdr := h.header
	keepForwarded := trust && len(hdr["X-Forwarded-Proto"]) > 0
	host := h.host
	if host == "" {
		host = hostport
	}
	bw.WriteString(h.method)
	bw.WriteByte(' ')
	bw.WriteString(h.target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if h.method == http.MethodPut {
		bw.WriteString("Content-Length: 0\r\n")
	}
	conn := hdr["Connection"]
	var sawCacheControl, sawUA bool
	for rest := h.fields; rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\r\n")
		colon := strings.IndexByte(line, ':')
		name, value := line[:colon], trimOWS(line[colon+1:])
		key := canonicalKey(name)
		if hopByHop(key) {
			continue
		}
		switch key {
		case "Host", "Content-Length":
			continue // written above
		case "X-Forwarded-For":
			continue // written below, with the values of all its fields when they are trusted
		case "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-Ip":
			if !keepForwarded {
				continue
			}
		case "Cache-Control":
			sawCacheControl = true
		case "User-Agent":
			if sawUA || value == "" {
				sawUA = true
				continue // writeRequest sends the first only, and no empty one
			}
			sawUA = true
		}
		if len(conn) > 0 && namedIn(conn, key) {
			continue
		}
		writeField(bw, key, value)
	}
	if te := hdr["Te"]; len(te) > 0 && strings.Contains(strings.ToLower(strings.Join(te, ",")), "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if _, ok := hdr["Cache-Control"]; ok && !sawCacheControl {
		bw.WriteString("Cache-Control: no-cache\r\n") // parseHead's for Pragma: no-cache
	}
	clientIP, _, err := net.SplitHostPort(remote)
	if err != nil {
		clientIP = remote
	}
	bw.WriteString("X-Forwarded-For: ")
	if prior := hdr["X-Forwarded-For"]; trust && len(prior) > 0 {
		for _, v := range prior {
			bw.WriteString(v)
			bw.WriteString(", ")
		}
	}
	bw.WriteString(clientIP)
	bw.WriteString("\r\n")
	if !keepForwarded {
		writeField(bw, "X-Forwarded-Proto", hd.proto[0])
		writeField(bw, "X-Forwarded-Host", h.host)
		writeField(bw, "X-Forwarded-Port", hd.port[0])
		writeField(bw, "X-Real-Ip", clientIP)
	}
	bw.WriteString("\r\n")
}

// namedIn reports whether Connection values list key as a token.
func namedIn(values []string, key string) bool {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(tok), key) {
				return true
			}
		}
	}
	return false
}

// directHead is a backend response head the direct lane relays itself.
type directHead struct {
	head     string // status line and fields, CRLF between them
	code     int
	cl       int64 // Content-Length, -1 for none
	close    bool  // the backend closes the connection after it
	hasType  bool  // Content-Type or a Content-Encoding given: nothing to sniff
	hasDate  bool
	hasHSTS  bool
	chunked  bool   // Transfer-Encoding: chunked, which only the event loop relays itself
	trailer  string // the Trailer field for the client: the canonical names the backend announced
	conn     string // the Connection field's value, for the fields it names
	size     int    // bytes of the head in the reader
	fallback bool   // not for the lane: the handler reads it from the reader
}

// readDirectHead waits for a response head in br and parses it. A head the lane does not take is
// left in br with fallback set. The head's strings point into br's buffer: they hold until br reads
// again.
func readDirectHead(br *bufio.Reader) (directHead, error) {
	if _, err := br.Peek(1); err != nil {
		return directHead{}, &noResponseError{err}
	}
	b, err := peekHead(br)
	if err != nil {
		return directHead{}, err // a head cut short, which net/http's reader refuses too
	}
	if b == nil {
		return directHead{fallback: true}, nil
	}
	rh := parseDirectHead(alias(b[:len(b)-2])) // valid until br reads again: see respondDirect
	rh.size = len(b)
	return rh, nil
}

// parseDirectHead parses a response head; fallback is set for anything but a final response framed by
// Content-Length or chunked (or bodiless by its status) with fields net/http would take as they are.
// A chunked head is taken only as net/http takes it: one Transfer-Encoding field saying chunked and
// nothing else, no Content-Length, an HTTP/1.1 response (net/http ignores the field in HTTP/1.0),
// and Trailer fields that announce valid field names other than the framing's.
func parseDirectHead(s string) directHead {
	rh := directHead{head: s, cl: -1, fallback: true}
	line, rest, _ := strings.Cut(s, "\r\n")
	code, minor, ok := parseStatusLine(line)
	if !ok {
		return rh
	}
	rh.code = code
	var closeTok, keepAlive, sawEncoding, sawTrailer bool
	var announced []string // the Trailer fields' values
	for rest != "" {
		var f string
		f, rest, _ = strings.Cut(rest, "\r\n")
		colon := strings.IndexByte(f, ':')
		if colon <= 0 {
			return rh
		}
		name, value := f[:colon], trimOWS(f[colon+1:])
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return rh
		}
		switch canonicalKey(name) {
		case "Content-Length":
			if rh.cl >= 0 {
				return rh // net/http compares repeated lengths
			}
			if rh.cl, ok = parseLength(value); !ok {
				return rh
			}
		case "Transfer-Encoding":
			if rh.chunked || !strings.EqualFold(value, "chunked") {
				return rh
			}
			rh.chunked = true
		case "Trailer":
			sawTrailer = true
			announced = append(announced, value)
		case "Content-Type":
			rh.hasType = true
		case "Content-Encoding": // the first one decides, as http.Header.Get
			if !sawEncoding && value != "" {
				rh.hasType = true
			}
			sawEncoding = true
		case "Date":
			rh.hasDate = true
		case "Strict-Transport-Security":
			rh.hasHSTS = true
		case "Connection":
			if rh.conn != "" {
				return rh // rare enough to leave to net/http
			}
			rh.conn = value
			c, k, _ := connectionTokens([]string{value})
			closeTok, keepAlive = c, k
		}
	}
	if rh.chunked && (rh.cl >= 0 || minor == 0) || sawTrailer && !rh.chunked {
		return rh
	}
	if sawTrailer {
		var ok bool
		if rh.trailer, ok = trailerField(announced); !ok {
			return rh
		}
	}
	if rh.cl < 0 && !rh.chunked && bodyAllowed(rh.code) {
		return rh // without a length (or for HEAD, where the handler takes the head's) net/http decides
	}
	rh.close = closeTok || minor == 0 && !keepAlive
	rh.fallback = false
	return rh
}

// trailerField returns the Trailer field handler.respond sends for a chunked response whose Trailer
// fields have values: the names they list, canonical and once each ("" for none). It is not ok for
// names net/http refuses there (it fails the response) and for invalid ones.
func trailerField(values []string) (string, bool) {
	var names []string
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name == "" {
				continue
			}
			if !httpguts.ValidHeaderFieldName(name) {
				return "", false
			}
			switch name = textproto.CanonicalMIMEHeaderKey(name); name {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return "", false
			}
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return strings.Join(names, ", "), true
}

// respondDirect relays the response whose head is rh from c to the client. It returns how it went
// and whether the client connection may serve another request.
func (fc *fconn) respondDirect(st *state, rt *route.Route, c *h1Conn, ep *endpoint, rh *directHead) (o outcome, keep bool) {
	o.upstream = ep.hostport
	head := &fc.head
	if rh.fallback || rh.chunked {
		return fc.respondHandler(rt, c, ep)
	}
	c.br.Discard(rh.size)
	noBody := head.method == http.MethodHead || !bodyAllowed(rh.code)
	left := rh.cl
	if noBody {
		left = 0
	}
	keep = !head.close
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(&fc.wc)
	defer func() {
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	var sniff []byte
	if !rh.hasType && left > 0 {
		if c.br.Buffered() < int(min(left, sniffLen)) { // Peek is going to move the head's bytes
			rh.head, rh.conn = strings.Clone(rh.head), strings.Clone(rh.conn)
		}
		var err error
		if sniff, err = c.br.Peek(int(min(left, sniffLen))); err != nil {
			c.c.Close() // nothing was sent: the client sees the connection close, as from the handler
			return outcome{code: rh.code, upstream: ep.hostport, aborted: true}, false
		}
	}
	writeDirectHead(bw, head.minor, fc.s.h.p.serverHdr[0], fc.hsts(rt), rh, sniff, "", keep)
	o.code = rh.code
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	for left > 0 {
		var b []byte
		if n := c.br.Buffered(); n > 0 {
			b, _ = c.br.Peek(int(min(int64(n), left)))
			c.br.Discard(len(b))
		} else {
			n, err := c.br.Read((*bp)[:min(int64(len(*bp)), left)])
			if n == 0 {
				if err == nil {
					err = io.ErrNoProgress
				}
				c.c.Close()
				_ = bw.Flush() // what was sent so far; closing tells the client the rest is missing
				fc.s.h.p.opts.Logger.V(2).Info("Copying the response body failed", "upstream", ep.hostport, "err", err)
				o.aborted = true
				return o, false
			}
			b = (*bp)[:n]
		}
		left -= int64(len(b))
		if _, err := bw.Write(b); err != nil {
			c.c.Close()
			o.aborted = true
			return o, false
		}
		o.sent += int64(len(b))
	}
	if rh.close {
		c.c.Close()
	} else {
		ep.idle.put(c, fc.s.h.p.opts.MaxIdleConnsPerEndpoint, time.Now())
	}
	if err := bw.Flush(); err != nil {
		return o, false
	}
	return o, keep
}

// writeDirectHead writes the response head as fastRW.commit writes what handler.respond makes of the
// backend's head for a client speaking HTTP/1.minor: hop-by-hop fields and those named by Connection
// dropped, our Server, the route's HSTS values, a Date and a sniffed Content-Type when the backend
// sent none, and framing (a field line with its CRLF) when the body's framing is not the backend's.
func writeDirectHead(bw *bufio.Writer, minor int, server string, hsts []string, rh *directHead, sniff []byte, framing string, keep bool) {
	writeStatusLine(bw, minor, rh.code)
	_, rest, _ := strings.Cut(rh.head, "\r\n")
	for rest != "" {
		var line string
		line, rest, _ = strings.Cut(rest, "\r\n")
		colon := strings.IndexByte(line, ':')
		key := canonicalKey(line[:colon])
		if key == "Server" || hopByHop(key) || suppressed(rh.code, key) || rh.conn != "" && namedIn([]string{rh.conn}, key) {
			continue
		}
		writeField(bw, key, trimOWS(line[colon+1:]))
	}
	bw.WriteString("Server: ")
	bw.WriteString(server)
	bw.WriteString("\r\n")
	if !rh.hasHSTS {
		for _, v := range hsts {
			writeField(bw, "Strict-Transport-Security", v)
		}
	}
	if !rh.hasDate {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate(time.Now()))
		bw.WriteString("\r\n")
	}
	if len(sniff) > 0 {
		writeField(bw, "Content-Type", http.DetectContentType(sniff))
	}
	if rh.trailer != "" {
		writeField(bw, "Trailer", rh.trailer)
	}
	bw.WriteString(framing)
	writeConnection(bw, minor, !keep)
	bw.WriteString("\r\n")
}

// respondHandler relays a response the lane does not parse itself through the handler's respond,
// with the HSTS field servePlain would have set.
func (fc *fconn) respondHandler(rt *route.Route, c *h1Conn, ep *endpoint) (o outcome, keep bool) {
	o.upstream = ep.hostport
	keep = fc.respondWith(func(w *fastRW, r *http.Request) bool {
		if hsts := fc.hsts(rt); hsts != nil {
			w.Header()["Strict-Transport-Security"] = hsts
		}
		out := &http.Request{Method: r.Method, Header: http.Header{}}
		resp, err := readFinal(c, out)
		if err != nil {
			c.c.Close()
			o.code = http.StatusBadGateway
			fc.s.h.p.opts.Logger.V(2).Info("Upstream request failed", "upstream", ep.hostport, "err", err)
			fc.s.h.plain(w, o.code, "the backend endpoint failed")
			return false
		}
		resp.Body = &h1Body{rc: resp.Body, conn: c, idle: &ep.idle, max: fc.s.h.p.opts.MaxIdleConnsPerEndpoint, keep: !resp.Close}
		o.code, o.sent, o.aborted = fc.s.h.respond(w, r, resp, ep, nil)
		return o.aborted
	})
	return o, keep
}

// hsts returns the Strict-Transport-Security values ingress-nginx's defaults give responses of rt on
// this listener (servePlain's), nil for none.
func (fc *fconn) hsts(rt *route.Route) []string { return hstsFor(fc.s.h, rt) }

func hstsFor(h *handler, rt *route.Route) []string {
	if pol := rt.Policy; rt.TLS && h.tls && pol != nil {
		return pol.HSTS
	}
	return nil
}
