package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baregate/baregate/ingress/route"
)

type handler struct {
	p     *Proxy
	proto []string // X-Forwarded-Proto, shared and never modified
	port  []string // X-Forwarded-Port
	tls   bool     // the listener terminates TLS
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hopHeaders are connection-level headers (RFC 9110 7.6.1) that a proxy must not forward.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// hopByHop reports whether the canonical field name key is one of hopHeaders.
func hopByHop(key string) bool { return slices.Contains(hopHeaders, key) }

// statusClientClosed is nginx's 499: the client went away before the response.
const statusClientClosed = 499

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if rc := http.NewResponseController(w); r.ProtoMajor == 1 {
		sw := &sendTimeoutRW{ResponseWriter: w, rc: rc, d: h.p.opts.ClientSendTimeout}
		sw.refresh() // the connection's deadline may be a past request's: net/http sets none of its own
		w = sw
	} else {
		sw := &streamSendTimeoutRW{ResponseWriter: w, rc: rc, d: h.p.opts.ClientSendTimeout}
		defer sw.stop()
		w = sw
	}
	st := h.p.state.Load()
	var rt *route.Route
	if st != nil {
		rt = st.table.Match(r.Host, r.URL.Path)
	}
	if h.serveRoute(w, r, st, rt, start) {
		// The status is sent, so the only way left to tell the client the body is cut short is to
		// abort its connection (or stream), as nginx does.
		panic(http.ErrAbortHandler)
	}
}

// serveRoute serves r by rt, the route of st that matches it (nil for none), and records it. It
// returns whether the response was cut short, which the server must tell by aborting the connection.
func (h *handler) serveRoute(w http.ResponseWriter, r *http.Request, st *state, rt *route.Route, start time.Time) bool {
	if st == nil {
		h.plain(w, http.StatusServiceUnavailable, "no route table yet")
		return false
	}
	if rt == nil {
		h.plain(w, http.StatusNotFound, "no Ingress rule matches this host and path")
		return false
	}
	var code int
	var upstream string
	var sent, received int64
	var aborted bool
	used := rt
	if pol := rt.Policy; pol == nil {
		code, upstream, sent, received, aborted = h.forward(w, r, st.pools[rt.Backend.ID], st.backends[rt.Backend.ID], nil)
	} else if pol.Plain && rt.Canary == nil {
		code, upstream, sent, received, aborted = h.servePlain(w, r, st, rt)
	} else {
		used, code, upstream, sent, received, aborted = h.servePolicy(w, r, st, rt)
	}
	h.record(st.routes[used.ID], used, reqLine{r.RemoteAddr, r.Method, r.Host, r.RequestURI, r.Proto}, outcome{code, upstream, sent, received, aborted}, time.Since(start))
	return aborted
}

// reqLine is what the access log says about a request.
type reqLine struct{ client, method, host, uri, proto string }

// outcome is how a request went: the status sent, the endpoint used and the body bytes sent and
// received; aborted when the response was cut short.
type outcome struct {
	code           int
	upstream       string
	sent, received int64
	aborted        bool
}

// record counts a request that took elapsed in its route's metrics and writes its access log line.
func (h *handler) record(rs *routeStats, used *route.Route, r reqLine, o outcome, elapsed time.Duration) {
	rs.codes[codeSlot(o.code)].Add(1)
	rs.bytesOut.Add(uint64(o.sent))
	rs.bytesIn.Add(uint64(o.received))
	rs.latency.Observe(elapsed.Seconds())
	if h.p.opts.AccessLog {
		h.p.opts.Logger.Info("Request", "client", r.client, "method", r.method, "host", r.host, "uri", r.uri,
			"proto", r.proto, "status", o.code, "bytesSent", o.sent, "bytesReceived", o.received, "duration", elapsed,
			"ingress", used.Ingress.String(), "service", used.Backend.Service.String(), "upstream", o.upstream, "aborted", o.aborted)
	}
}

// servePlain serves a route whose Ingress sets no per-request annotation: only ingress-nginx's
// defaults apply (redirect to HTTPS for TLS hosts, HSTS, the body size limit), checked inline.
func (h *handler) servePlain(w http.ResponseWriter, r *http.Request, st *state, rt *route.Route) (int, string, int64, int64, bool) {
	pol := rt.Policy
	if rt.TLS {
		if h.tls {
			if pol.HSTS != nil {
				w.Header()["Strict-Transport-Security"] = pol.HSTS
			}
		} else if pol.Nginx.SSLRedirect {
			return h.redirect(w, "https://"+hostOnly(r.Host)+r.URL.RequestURI(), http.StatusPermanentRedirect), "", 0, 0, false
		}
	}
	if code, ok := h.limitBody(w, r, pol.Nginx.ProxyBodySize); !ok {
		return code, "", 0, 0, false
	}
	return h.forward(w, r, st.pools[rt.Backend.ID], st.backends[rt.Backend.ID], nil)
}

// plain answers a request the proxy cannot forward.
func (h *handler) plain(w http.ResponseWriter, code int, msg string) {
	hdr := w.Header()
	hdr["Server"] = h.p.serverHdr
	hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
	hdr["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, http.StatusText(code)+": "+msg+"\n")
}

// forward sends r to an endpoint of pl, retrying on other endpoints when that is safe, and copies the
// response back. It returns the status sent to the client, the endpoint used and the body bytes sent
// and received. f carries what annotations change (nil for none).
func (h *handler) forward(w http.ResponseWriter, r *http.Request, pl *pool, bs *backendStats, f *fwd) (code int, upstream string, sent, received int64, aborted bool) {
	p := h.p
	if len(pl.eps) == 0 {
		h.plain(w, http.StatusServiceUnavailable, "the backend has no ready endpoints")
		return http.StatusServiceUnavailable, "", 0, 0, false
	}
	to := p.timeouts
	if f != nil {
		to = f.timeouts
	}
	if pl.conns != nil {
		if code, ok := h.acquire(w, r, pl, to.connect); !ok {
			return code, "", 0, 0, false
		}
		defer pl.conns.release()
	}
	out := h.outgoing(r)
	var body *countingBody
	if out.Body != nil {
		body = &countingBody{rc: r.Body}
		out.Body = body
	}
	upgrade := out.Header.Get("Upgrade") != ""
	transport := p.http1
	if pl.h2c && !upgrade {
		transport = p.h2c
	}
	scheme := "http"
	if f != nil {
		f.adjust(out)
		if f.transport != nil {
			transport = f.transport
			scheme = f.scheme
		}
	}
	fast := !p.opts.DisableFastPath && (f == nil || f.transport == nil) && fastEligible(out, pl, upgrade)
	if !fast && f != nil && f.transport == nil && f.timeouts != p.timeouts {
		// The route's own timeouts, off the fast path (upgrades, h2c, Expect).
		transport, _ = p.transportFor("HTTP", pl.h2c && !upgrade, f.timeouts)
	}
	var triedBuf [4]*endpoint
	tried := triedBuf[:0]
	attempts := min(p.opts.Retries+1, len(pl.eps))
	for {
		now := time.Now()
		var ep *endpoint
		if f != nil && len(tried) == 0 && f.preferred != nil {
			ep = f.preferred
		} else {
			ep = pl.pick(p.opts.Balance, tried, now)
		}
		if ep == nil {
			break
		}
		tried = append(tried, ep)
		url := *r.URL
		if f != nil && f.path != "" {
			url.Path, url.RawPath = f.path, ""
		}
		url.Scheme, url.Host = scheme, ep.hostport
		out.URL = &url
		ep.inflight.Add(1)
		var resp *http.Response
		var err error
		if fast {
			resp, err = p.roundTrip1(out, ep, body, to)
		} else {
			resp, err = transport.RoundTrip(out)
		}
		if err == nil {
			if body != nil {
				received = body.n.Load()
			}
			if f != nil && f.intercept(resp) {
				ep.inflight.Add(-1)
				return resp.StatusCode, ep.hostport, 0, received, false
			}
			code, sent, aborted = h.respond(w, r, resp, ep, f)
			ep.inflight.Add(-1)
			return code, ep.hostport, sent, received, aborted
		}
		ep.inflight.Add(-1)
		if r.Context().Err() != nil {
			return statusClientClosed, ep.hostport, 0, 0, false
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.plain(w, http.StatusRequestEntityTooLarge, "the request body is larger than the Ingress allows (proxy-body-size)")
			return http.StatusRequestEntityTooLarge, ep.hostport, 0, tooBig.Limit, false
		}
		bs.upstreamErrors.Add(1)
		var de *dialError
		dialFailed := errors.As(err, &de)
		if dialFailed {
			ep.downUntil.Store(now.Add(p.opts.PassiveHealthTimeout).UnixNano())
		}
		untouched := body == nil || !body.touched.Load()
		if len(tried) < attempts && untouched && (dialFailed || idempotent(r.Method)) {
			bs.retries.Add(1)
			if body != nil {
				body = &countingBody{rc: r.Body}
				out.Body = body
			}
			continue
		}
		code = failureCode(err)
		p.opts.Logger.V(2).Info("Upstream request failed", "upstream", ep.hostport, "err", err)
		h.plain(w, code, "the backend endpoint failed")
		return code, ep.hostport, 0, 0, false
	}
	h.plain(w, http.StatusBadGateway, "no backend endpoint could be reached")
	return http.StatusBadGateway, "", 0, 0, false
}

// failureCode is the status answering a request whose backend exchange failed with err: 504 for a
// timeout, 502 otherwise.
func failureCode(err error) int {
	if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// outgoing builds the request to the backend: the client's request with hop-by-hop headers removed
// and the forwarding headers set. The client's Host header is kept, as Ingress backends expect.
func (h *handler) outgoing(r *http.Request) *http.Request {
	out := r.WithContext(r.Context())
	out.RequestURI = ""
	out.Close = false
	if r.ContentLength == 0 || r.Body == http.NoBody {
		out.Body = nil
	}
	hdr := make(http.Header, len(r.Header)+6)
	for k, v := range r.Header {
		hdr[k] = v
	}
	upgrade := ""
	if c := r.Header["Connection"]; len(c) > 0 {
		for _, f := range c {
			for _, tok := range strings.Split(f, ",") {
				tok = textproto.TrimString(tok)
				if strings.EqualFold(tok, "upgrade") {
					upgrade = r.Header.Get("Upgrade")
				}
				if tok != "" {
					delete(hdr, textproto.CanonicalMIMEHeaderKey(tok))
				}
			}
		}
	}
	for _, k := range hopHeaders {
		delete(hdr, k)
	}
	if te := r.Header["Te"]; len(te) > 0 && strings.Contains(strings.ToLower(strings.Join(te, ",")), "trailers") {
		hdr["Te"] = []string{"trailers"} // gRPC needs it
	}
	if upgrade != "" {
		hdr["Connection"] = []string{"Upgrade"}
		hdr["Upgrade"] = []string{upgrade}
	}
	clientIP, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		clientIP = r.RemoteAddr
	}
	ip := []string{clientIP}
	if prior := r.Header["X-Forwarded-For"]; h.p.opts.TrustForwardedHeaders && len(prior) > 0 {
		hdr["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + clientIP}
	} else {
		hdr["X-Forwarded-For"] = ip
	}
	if !h.p.opts.TrustForwardedHeaders || len(r.Header["X-Forwarded-Proto"]) == 0 {
		hdr["X-Forwarded-Proto"] = h.proto
		hdr["X-Forwarded-Host"] = []string{r.Host}
		hdr["X-Forwarded-Port"] = h.port
		hdr["X-Real-Ip"] = ip
	}
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = []string{""} // keep Go from adding its own
	}
	out.Header = hdr
	return out
}

// respond copies a backend response to the client, streaming: a body of unknown length is flushed
// as it arrives, and trailers (gRPC status) follow it.
func (h *handler) respond(w http.ResponseWriter, r *http.Request, resp *http.Response, ep *endpoint, f *fwd) (code int, sent int64, aborted bool) {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		code, sent = h.upgrade(w, r, resp)
		return code, sent, false
	}
	defer resp.Body.Close()
	dst := w.Header()
	cors := takeCORS(dst)
	for k, v := range resp.Header {
		dst[k] = v
	}
	cors.restore(dst)
	if c := resp.Header["Connection"]; len(c) > 0 {
		for _, f := range c {
			for _, tok := range strings.Split(f, ",") {
				if tok = textproto.TrimString(tok); tok != "" {
					delete(dst, textproto.CanonicalMIMEHeaderKey(tok))
				}
			}
		}
	}
	for _, k := range hopHeaders {
		delete(dst, k)
	}
	dst["Server"] = h.p.serverHdr
	if f != nil {
		f.decorate(dst, ep)
		if f.buffer && r.Method != http.MethodHead && len(resp.Trailer) == 0 {
			return h.respondBuffered(w, resp, ep)
		}
	}
	var announced []string
	if len(resp.Trailer) > 0 {
		announced = make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			announced = append(announced, k)
		}
		dst["Trailer"] = []string{strings.Join(announced, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	stream := resp.ContentLength < 0 || resp.ProtoMajor == 2
	n, err := copyBody(w, resp.Body, stream)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			h.p.opts.Logger.V(2).Info("Copying the response body failed", "upstream", ep.hostport, "err", err)
		}
		return resp.StatusCode, n, true
	}
	// Trailers announced up front are set by name; others (HTTP/2 backends need not announce them)
	// with the TrailerPrefix.
	for k, v := range resp.Trailer {
		if slices.Contains(announced, k) {
			dst[k] = v
		} else {
			dst[http.TrailerPrefix+k] = v
		}
	}
	return resp.StatusCode, n, false
}

// copyBody copies src to w with a pooled buffer, flushing after each read when stream is set.
func copyBody(w http.ResponseWriter, src io.Reader, stream bool) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var flusher http.Flusher
	if stream {
		flusher, _ = w.(http.Flusher)
	}
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// countingBody passes the client's request body to the backend, noting whether any of it was read
// (after which a retry is no longer safe) and how much. It leaves closing the client's body to the
// server. Its counters are atomic: net/http's Transport may still be reading in its write loop when
// the response has come and forward reads them.
type countingBody struct {
	rc      io.ReadCloser
	n       atomic.Int64
	touched atomic.Bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	b.touched.Store(true)
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return nil }

// sendTimeoutRW bounds each write of a response that net/http sends to an HTTP/1 client by the
// client send timeout, as idleTimeoutConn bounds writes to backends.
type sendTimeoutRW struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
	dl time.Time
}

func (w *sendTimeoutRW) refresh() { _ = refresh(&w.dl, w.d, w.rc.SetWriteDeadline) }

func (w *sendTimeoutRW) Write(p []byte) (int, error) {
	w.refresh()
	return w.ResponseWriter.Write(p)
}

func (w *sendTimeoutRW) Flush() {
	w.refresh()
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController (Hijack) reach net/http's writer.
func (w *sendTimeoutRW) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// streamSendTimeoutRW bounds each write of an HTTP/2 response by the client send timeout: a write
// still waiting when it passes (for the client's flow-control window, most often) resets the stream.
// A stream's own write deadline cannot do this, as it resets the stream when it passes even if
// nothing is being written, which would end quiet gRPC streams; so a timer is armed only while a
// write waits.
type streamSendTimeoutRW struct {
	http.ResponseWriter
	rc       *http.ResponseController
	d        time.Duration
	watchdog *time.Timer
	// mu orders a firing watchdog with the handler's end: net/http's writer must not be used after
	// the handler returned, and Timer.Stop does not wait for a callback that has begun.
	mu   sync.Mutex
	done bool
}

func (w *streamSendTimeoutRW) arm() {
	if w.watchdog == nil {
		w.watchdog = time.AfterFunc(w.d, w.expire)
		return
	}
	w.watchdog.Reset(w.d)
}

// expire resets the stream: a deadline in the past does so at once, which fails the waiting write.
func (w *streamSendTimeoutRW) expire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		_ = w.rc.SetWriteDeadline(time.Now())
	}
}

// stop ends the watchdog for good; the handler calls it before it returns.
func (w *streamSendTimeoutRW) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
	if w.watchdog != nil {
		w.watchdog.Stop()
	}
}

func (w *streamSendTimeoutRW) Write(p []byte) (int, error) {
	w.arm()
	defer w.watchdog.Stop()
	return w.ResponseWriter.Write(p)
}

func (w *streamSendTimeoutRW) Flush() {
	w.arm()
	defer w.watchdog.Stop()
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController reach net/http's writer.
func (w *streamSendTimeoutRW) Unwrap() http.ResponseWriter { return w.ResponseWriter }
