package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baregate/baregate/ingress/route"
)

// The client-side fast path: one goroutine per HTTP/1.x connection reads its requests (connections
// a server's event loops take, loop.go, start there instead: the loop serves the direct lane's
// requests itself and hands the connection here at the first other one). Each request takes one of
// three lanes, the leanest that can serve it:
//   - the direct lane (direct.go): bodiless idempotent requests to routes that only forward, copied
//     field by field to the backend and back without http.Request or http.Header;
//   - the handler lane: other requests a plain route serves (see parseHead for which) go through the
//     handler with a lean ResponseWriter (fastRW) that puts the response head and a small body
//     into one write;
//   - net/http: the first request neither takes hands the connection to net/http's server for the
//     rest of its life, bytes already read included, so that upgrades, Expect, chunked bodies,
//     annotations that need net/http and every malformed request get exactly the behaviour they had.
// net/http's server costs more per request than the proxying itself: a background read goroutine
// per request, deadline juggling, chunkWriter and its own header copies. ingress/lanes_test.go
// checks that the lanes put the same bytes on both wires.

// ConnServerOptions configure a ConnServer.
type ConnServerOptions struct {
	Scheme string // "http" or "https", as for Handler
	Port   int
	// Handover gives a connection to net/http for the rest of its life. The connection replays the
	// bytes the fast path read and did not serve.
	Handover func(net.Conn)
	// Slow reports request paths that must go to net/http whatever their route (ACME http-01
	// challenges). nil: none.
	Slow func(path string) bool
	// ReadHeaderTimeout bounds reading a request head once its first byte came, IdleTimeout the wait
	// for the next request on a kept-alive connection (http.Server's fields of the same names).
	ReadHeaderTimeout, IdleTimeout time.Duration
	// EventLoops is how many event loops serve the listener's connections (loop.go: plain TCP, or TLS
	// over a LoopConn); 0 serves every connection with a goroutine of its own.
	EventLoops int
	// Done, when set, is called once for each connection given to ServeConn, when the server is done
	// with it: closed, or handed over.
	Done func()
}

// ConnServer serves HTTP/1.x connections for one listener.
type ConnServer struct {
	h    *handler
	opts ConnServerOptions

	shutting atomic.Bool
	served   atomic.Uint64 // requests served on the fast path
	handed   atomic.Uint64 // connections handed to net/http
	mu       sync.Mutex
	conns    map[*fconn]struct{} // served by goroutines

	// The event loops (loop.go), started with the first connection for them.
	loops       []*evloop
	loopsFailed bool
	next        atomic.Uint32
	looped      atomic.Int64 // client connections on the loops
}

// ConnServer returns the fast-path server of one listener.
func (p *Proxy) ConnServer(o ConnServerOptions) *ConnServer {
	return &ConnServer{h: p.Handler(o.Scheme, o.Port).(*handler), opts: o, conns: map[*fconn]struct{}{}}
}

// maxDrain is how much of a request body the server reads and discards after the response so that
// the connection can serve the next request (net/http's limit); a longer rest closes it.
const maxDrain = 256 << 10

// pendingMax is how much body of unknown length the response writer holds back to send it with the
// head and a Content-Length, as net/http does with its first 2 KiB.
const pendingMax = 4 << 10

// fconn states, for Shutdown: only connections waiting for a request are closed at once.
const (
	connActive int32 = iota
	connIdle
	connClosed
)

type fconn struct {
	s      *ConnServer
	c      net.Conn
	br     *bufio.Reader
	remote string
	tls    *tls.ConnectionState // nil for plain connections
	state  atomic.Int32
	dl     time.Time       // the read deadline set, zero for none
	wc     idleTimeoutConn // c with the client send timeout: the response writers write to it
	head   reqHead
	req    http.Request
	url    url.URL
	body   bodyReader
	w      fastRW
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8<<10) }}
)

// ServeConn serves c until it closes or is handed over; it closes c unless handing it over. A plain
// TCP connection, or a tls.Conn built on a LoopConn, goes to an event loop when the server has them
// (loop.go), and ServeConn returns at once.
func (s *ConnServer) ServeConn(c net.Conn) {
	if s.adopt(c) {
		return
	}
	fc := s.newConn(c)
	s.track(fc)
	s.run(fc, nil)
}

func (s *ConnServer) newConn(c net.Conn) *fconn {
	fc := &fconn{s: s, c: c, br: readerPool.Get().(*bufio.Reader)}
	fc.br.Reset(c)
	fc.wc = idleTimeoutConn{Conn: c, write: s.h.p.opts.ClientSendTimeout}
	inner := c
	if pc, ok := c.(*prefixConn); ok {
		inner = pc.Conn
	}
	if tc, ok := inner.(*tls.Conn); ok {
		st := tc.ConnectionState() // the handshake is done: the state does not change
		fc.tls = &st
	}
	fc.head.header = make(http.Header, 8)
	fc.w.hdr, fc.w.body = make(http.Header, 16), &fc.body
	return fc
}

// run serves fc's requests, tracked by the caller, after finishing with then (unless nil) one whose
// head fc.head holds; then returns whether the connection may serve another. The connection is
// closed or handed over when run returns.
func (s *ConnServer) run(fc *fconn, then func(*fconn) bool) {
	if s.opts.Done != nil {
		defer s.opts.Done()
	}
	handed := fc.serve(then)
	s.mu.Lock()
	delete(s.conns, fc)
	s.mu.Unlock()
	if handed {
		return // net/http reads fc.br's bytes first
	}
	if fc.body.left > 0 || fc.br.Buffered() > 0 {
		fc.linger()
	}
	fc.c.Close()
	fc.br.Reset(nil)
	readerPool.Put(fc.br)
}

// serve loops over the requests of the connection, starting with then's when it is not nil; it
// returns true when it handed the connection over.
func (fc *fconn) serve(then func(*fconn) bool) bool {
	s := fc.s
	fc.remote = fc.c.RemoteAddr().String() // after the PROXY header, read by the first call
	if then != nil && (!fc.guard(then) || s.shutting.Load()) {
		return false
	}
	for {
		switch fc.readHead() {
		case headSlow:
			fc.handover()
			return true
		case headIncomplete: // the connection failed or closed
			return false
		}
		start := time.Now()
		h := &fc.head
		if !fc.parseURL(h.target) {
			fc.handover()
			return true
		}
		st := s.h.p.state.Load()
		var rt *route.Route
		if st != nil {
			rt = st.table.Match(h.host, fc.url.Path)
		}
		if rt != nil && rt.Policy != nil && (!rt.Policy.Plain || rt.Canary != nil) || s.opts.Slow != nil && s.opts.Slow(fc.url.Path) {
			fc.handover() // annotations that need net/http's request handling, ACME challenges
			return true
		}
		fc.br.Discard(h.size) // the head is ours now
		s.served.Add(1)
		var keep bool
		if s.directOK(h, st, rt) {
			keep = fc.serveDirect(st, rt, start)
		} else {
			keep = fc.serveOne(st, rt, start)
		}
		if !keep {
			return false
		}
		if s.shutting.Load() {
			return false
		}
	}
}

// readHead waits for a request head in the buffer and parses it. headIncomplete means the connection
// is done (closed, timed out, shut down).
func (fc *fconn) readHead() headParse {
	br := fc.br
	if br.Buffered() == 0 {
		fc.state.Store(connIdle)
		if fc.s.shutting.Load() {
			return headIncomplete
		}
		fc.deadline(fc.s.opts.IdleTimeout)
		_, err := br.Peek(1)
		if !fc.state.CompareAndSwap(connIdle, connActive) || err != nil {
			return headIncomplete // closed by Shutdown, or by the client
		}
	}
	headerDeadline := false
	for {
		b, _ := br.Peek(br.Buffered())
		if r := parseHead(b, &fc.head); r != headIncomplete {
			return r
		}
		if br.Buffered() == br.Size() {
			return headSlow // larger than the buffer: net/http's limit applies
		}
		if !headerDeadline {
			headerDeadline = true
			fc.deadline(fc.s.opts.ReadHeaderTimeout)
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			if br.Buffered() > 0 && !errors.Is(err, io.EOF) && !isTimeout(err) {
				return headSlow
			}
			return headIncomplete
		}
	}
}

// deadline sets the read deadline d from now. A deadline is only moved forward once it is a second
// old, which saves a timer update per request on busy connections at the cost of timing out up to
// a second early.
func (fc *fconn) deadline(d time.Duration) {
	if d <= 0 {
		return
	}
	want := time.Now().Add(d)
	if !fc.dl.IsZero() && fc.dl.Before(want) && want.Sub(fc.dl) < time.Second {
		return
	}
	fc.dl = want
	_ = fc.c.SetReadDeadline(want)
}

func (fc *fconn) clearDeadline() {
	if !fc.dl.IsZero() {
		fc.dl = time.Time{}
		_ = fc.c.SetReadDeadline(time.Time{})
	}
}

// linger closes the sending side of a connection the client is still writing to, and reads what it
// sends for a moment, as net/http does: closing with unread bytes would reset the connection, and the
// client could lose the response (413 to a large body) before reading it.
func (fc *fconn) linger() { linger(fc.c) }

func linger(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 4<<20))
}

// handover gives the connection, with the bytes read and not consumed, to net/http.
func (fc *fconn) handover() {
	fc.s.handed.Add(1)
	fc.clearDeadline()
	if !fc.wc.writeDL.IsZero() { // net/http sets none of its own, and may write before a handler does
		_ = fc.c.SetWriteDeadline(time.Time{})
	}
	fc.s.opts.Handover(&handedConn{Conn: fc.c, br: fc.br})
}

// parseURL sets fc.url from an origin-form target: targets whose path needs no unescaping are split
// here, others parsed by net/url as net/http does.
func (fc *fconn) parseURL(target string) bool {
	path, query, hasQuery := strings.Cut(target, "?")
	if plainPath(path) {
		fc.url = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
		return true
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	fc.url = *u
	return true
}

// plainPath reports whether net/url would take path as it is: no escapes, and nothing it would
// escape again (which sets RawPath).
func plainPath(path string) bool {
	for i := 0; i < len(path); i++ {
		c := path[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		switch c {
		case '-', '_', '.', '~', '$', '&', '+', ',', '/', ':', ';', '=', '@':
			continue
		}
		return false
	}
	return true
}

// serveOne serves the parsed request; it returns whether the connection may serve another.
func (fc *fconn) serveOne(st *state, rt *route.Route, start time.Time) (keep bool) {
	return fc.respondWith(func(w *fastRW, r *http.Request) bool { return fc.handle(w, r, st, rt, start) })
}

// respondWith builds the http.Request and the response writer of the parsed request, runs serve with
// them and completes the response; serve returns whether it cut the response short. respondWith
// returns whether the connection may serve another request.
func (fc *fconn) respondWith(serve func(*fastRW, *http.Request) (aborted bool)) (keep bool) {
	h := &fc.head
	r := &fc.req
	*r = http.Request{
		Method: h.method, URL: &fc.url, Proto: h.proto(), ProtoMajor: 1, ProtoMinor: h.minor, Header: h.header,
		Host: h.host, RemoteAddr: fc.remote, RequestURI: h.target, ContentLength: h.contentLength, Close: h.close,
		Body: http.NoBody, TLS: fc.tls,
	}
	fc.body = bodyReader{br: fc.br, left: h.contentLength}
	if h.contentLength > 0 {
		fc.clearDeadline() // as net/http without a ReadTimeout, the body may take its time
		r.Body = &fc.body
	}
	w := &fc.w
	// The writer's buffer is taken for the request only: idle connections keep just their reader.
	w.bw = writerPool.Get().(*bufio.Writer)
	w.bw.Reset(&fc.wc)
	defer func() {
		w.bw.Reset(nil)
		writerPool.Put(w.bw)
		w.bw = nil
	}()
	w.reset(r)
	if serve(w, r) {
		_ = w.bw.Flush() // what was sent so far; closing tells the client the rest is missing
		return false
	}
	if err := w.finish(); err != nil || w.closeAfter {
		return false
	}
	if fc.body.left > 0 {
		fc.deadline(fc.s.opts.ReadHeaderTimeout)
		if _, err := fc.br.Discard(int(fc.body.left)); err != nil {
			return false
		}
	}
	return true
}

// handle runs the handler, recovering its panics as net/http does: ErrAbortHandler silently, others
// logged.
func (fc *fconn) handle(w *fastRW, r *http.Request, st *state, rt *route.Route, start time.Time) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			fc.logPanic(v)
		}
	}()
	return fc.s.h.serveRoute(w, r, st, rt, start)
}

// serveDirect runs the direct lane.
func (fc *fconn) serveDirect(st *state, rt *route.Route, start time.Time) (keep bool) {
	return fc.guard(func(fc *fconn) bool { return fc.direct(st, rt, start) })
}

// guard runs serve, which returns whether the connection may serve another request, recovering its
// panics as handle does; a panic ends the connection.
func (fc *fconn) guard(serve func(*fconn) bool) (keep bool) {
	defer func() {
		if v := recover(); v != nil {
			keep = false
			fc.logPanic(v)
		}
	}()
	return serve(fc)
}

func (fc *fconn) logPanic(v any) {
	if v != http.ErrAbortHandler { //nolint:errorlint // net/http compares the same way
		buf := make([]byte, 64<<10)
		buf = buf[:runtime.Stack(buf, false)]
		fc.s.h.p.opts.Logger.Error(fmt.Errorf("%v", v), "Panic serving a request", "client", fc.remote, "stack", string(buf))
	}
}

// bodyReader is a request body of known length, read from the connection's buffer.
type bodyReader struct {
	br   *bufio.Reader
	left int64
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if b.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (b *bodyReader) Close() error { return nil }

// handedConn is a connection given to net/http: it reads the fast path's buffered bytes first.
type handedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *handedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// Stats returns the number of requests served on the fast path and of connections handed to net/http.
func (s *ConnServer) Stats() (served, handedOver uint64) { return s.served.Load(), s.handed.Load() }

// CloseWrite lets net/http half-close the connection before closing it after an error answer, so that
// the client reads the answer before the reset that unread request bytes cause.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Shutdown closes the connections waiting for a request and waits for the others to finish theirs,
// until ctx ends, when it closes them all.
func (s *ConnServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting.Store(true)
	loops := s.loops
	s.mu.Unlock()
	for _, l := range loops {
		l.shutdown()
	}
	defer func() {
		for _, l := range loops {
			l.stop()
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns) + int(s.looped.Load())
		for fc := range s.conns {
			if fc.state.CompareAndSwap(connIdle, connClosed) {
				fc.c.Close()
			}
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for fc := range s.conns {
				fc.c.Close()
			}
			s.mu.Unlock()
			return fmt.Errorf("waiting for HTTP/1 connections to finish: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
