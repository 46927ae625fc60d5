package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// The HTTP/1.1 fast path sends a request on a pooled connection and reads the response in the
// handler's own goroutine. net/http's Transport hands every request to two goroutines per
// connection through channels, which costs more than the rest of the proxy together; plain
// requests (no upgrade, no Expect, no chunked request body, HTTP/1.1 backends) do not need that.

// idleMax is how long a pooled connection may sit unused before it is dropped instead of reused:
// backends close idle keep-alive connections (nginx after 75 s, Go after 90 s by default).
const idleMax = 30 * time.Second

type h1Conn struct {
	c   net.Conn
	raw syscall.RawConn // for the liveness check before reuse; nil if unavailable
	// peek, peekBuf and idleOK are alive's check, kept so that it allocates nothing.
	peek    func(fd uintptr) bool
	peekBuf [1]byte
	idleOK  bool
	br      *bufio.Reader
	bw      *bufio.Writer
	rh      respHead
	usedAt  time.Time
}

// h1Idle is one endpoint's stack of idle connections.
type h1Idle struct {
	mu    sync.Mutex
	conns []*h1Conn
}

// get returns an idle connection that is still open and received nothing while idle: a backend that
// closed it, or sent something unasked (a 408 before its idle timeout, a stray response), would
// otherwise answer the next request with a failure or with bytes that are not its response. The
// check costs one non-blocking peek, about 1.5% of a small request's CPU; net/http's Transport and
// nginx watch idle connections for the same reason.
func (i *h1Idle) get(now time.Time) *h1Conn {
	i.mu.Lock()
	defer i.mu.Unlock()
	for n := len(i.conns); n > 0; n = len(i.conns) {
		c := i.conns[n-1]
		i.conns = i.conns[:n-1]
		if now.Sub(c.usedAt) < idleMax && c.alive() {
			return c
		}
		c.c.Close()
	}
	return nil
}

func (i *h1Idle) put(c *h1Conn, max int, now time.Time) {
	c.usedAt = now
	i.mu.Lock()
	if len(i.conns) < max {
		i.conns = append(i.conns, c)
		c = nil
	}
	i.mu.Unlock()
	if c != nil {
		c.c.Close()
	}
}

func (i *h1Idle) closeAll() {
	i.mu.Lock()
	conns := i.conns
	i.conns = nil
	i.mu.Unlock()
	for _, c := range conns {
		c.c.Close()
	}
}

// alive reports whether an idle connection is still open and received nothing. One non-blocking peek
// replaces the background read loop that net/http keeps on every connection.
func (c *h1Conn) alive() bool {
	if c.br.Buffered() > 0 {
		return false // unsolicited bytes from the backend make the connection unusable
	}
	if c.raw == nil {
		return true
	}
	if c.peek == nil { // made once: a closure passed to RawConn.Read escapes
		c.peek = func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			c.idleOK = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
			return true // never wait for readiness
		}
	}
	c.idleOK = false
	err := c.raw.Read(c.peek)
	return err == nil && c.idleOK
}

// fastEligible reports whether out can take the fast path.
func fastEligible(out *http.Request, pl *pool, upgrade bool) bool {
	if pl.h2c || upgrade || out.Header["Expect"] != nil {
		return false
	}
	return out.Body == nil || out.ContentLength > 0
}

// roundTrip1 sends out to ep over a pooled or new connection. When a reused connection turns out to
// have been closed by the backend while idle (see resendable), the request goes again on a new one
// if its body was not read yet.
func (p *Proxy) roundTrip1(out *http.Request, ep *endpoint, body *countingBody, to timeouts) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := p.upstreamConn(out.Context(), ep, to, time.Now())
		if err != nil {
			return nil, err
		}
		resp, err := p.exchange(c, out, ep.hostport)
		if err == nil {
			resp.Body = &h1Body{rc: resp.Body, conn: c, idle: &ep.idle, max: p.opts.MaxIdleConnsPerEndpoint, keep: !resp.Close && !out.Close}
			return resp, nil
		}
		c.c.Close()
		if !reused || attempt > 0 || (body != nil && body.touched.Load()) || out.Context().Err() != nil || !resendable(err, out.Method) {
			return nil, err
		}
	}
}

// writeError is a failure to send a request: the backend had closed the connection, and got none of
// it.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// noResponseError is a connection that ended before the first byte of a response.
type noResponseError struct{ err error }

func (e *noResponseError) Error() string { return e.err.Error() }
func (e *noResponseError) Unwrap() error { return e.err }

// resendable reports whether a request that failed on a reused connection may be sent again on a new
// one, because the backend most likely closed the connection while it sat idle: the write failed,
// or (for idempotent methods only, RFC 9110 9.2.2, as nginx retries) the connection closed before
// any response byte. A timeout or a response cut short is the backend's answer, not a stale
// connection.
func resendable(err error, method string) bool {
	var we *writeError
	if errors.As(err, &we) {
		return true
	}
	var nr *noResponseError
	return errors.As(err, &nr) && !isTimeout(err) && idempotent(method)
}

// upstreamConn returns a pooled connection to ep or a new one, and whether it was pooled.
func (p *Proxy) upstreamConn(ctx context.Context, ep *endpoint, to timeouts, now time.Time) (*h1Conn, bool, error) {
	if c := ep.idle.get(now); c != nil {
		// A pooled connection may have served a route with other timeouts.
		itc := c.c.(*idleTimeoutConn)
		itc.read, itc.write = to.read, to.send
		return c, true, nil
	}
	nc, err := p.dial(ctx, ep.hostport, to)
	if err != nil {
		return nil, false, err
	}
	c := &h1Conn{c: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 16<<10)}
	if tc, ok := nc.(*idleTimeoutConn).Conn.(*net.TCPConn); ok {
		c.raw, _ = tc.SyscallConn()
	}
	return c, false, nil
}

func (p *Proxy) exchange(c *h1Conn, out *http.Request, hostport string) (*http.Response, error) {
	if err := writeRequest(c.bw, out, hostport); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, &writeError{err}
	}
	if ctx := out.Context(); ctx.Done() != nil { // the client-side fast path's requests cannot be cancelled
		stop := context.AfterFunc(ctx, func() { c.c.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	var resp *http.Response
	_, err := c.br.Peek(1)
	if err != nil {
		err = &noResponseError{err}
	} else {
		resp, err = readFinal(c, out)
	}
	if err != nil && out.Context().Err() != nil {
		return nil, out.Context().Err()
	}
	return resp, err
}

// readFinal reads the response to out from c, skipping informational ones (103 Early Hints), which
// are not forwarded.
func readFinal(c *h1Conn, out *http.Request) (*http.Response, error) {
	for {
		resp, err := c.rh.readResponse(c.br, out)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		return resp, nil
	}
}

// dial opens a connection to an endpoint with the connect timeout and the idle read/write timeouts.
func (p *Proxy) dial(ctx context.Context, hostport string, to timeouts) (net.Conn, error) {
	d := p.dialer
	if to.connect != d.Timeout {
		d = &net.Dialer{Timeout: to.connect, KeepAlive: d.KeepAlive}
	}
	c, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil, &dialError{err}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &idleTimeoutConn{Conn: c, read: to.read, write: to.send}, nil
}

// h1Body returns the connection to the pool once the response body has been read to its end.
type h1Body struct {
	rc   io.ReadCloser
	conn *h1Conn
	idle *h1Idle
	max  int
	keep bool
	eof  bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if !b.eof || !b.keep {
		// Not rc.Close: net/http's body reader reads the rest of an unfinished body first (all of
		// a chunked one, which may never end), and the connection is not kept anyway.
		return b.conn.c.Close()
	}
	if err := b.rc.Close(); err != nil {
		return b.conn.c.Close()
	}
	b.idle.put(b.conn, b.max, time.Now())
	return nil
}
