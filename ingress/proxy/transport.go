package proxy

import (
	"context"
	"net"
	"net/http"
	"time"
)

// dialError marks a failure to connect: nothing was sent, so the request may go to another endpoint
// whatever its method, and the endpoint is skipped for a while.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// idleTimeoutConn applies nginx's proxy_read_timeout and proxy_send_timeout semantics: each read or
// write may wait at most the timeout, however long the whole exchange takes (streams stay up while
// data flows).
//
// A deadline is moved forward only when it has fallen behind by a sixteenth of the timeout (at most
// a second): a busy connection then updates its timers a few times a second instead of at every read
// and write, and a wait times out at most that much early, never late.
type idleTimeoutConn struct {
	net.Conn
	read, write     time.Duration
	readDL, writeDL time.Time // the deadlines set by Read and Write
}

func (c *idleTimeoutConn) Read(b []byte) (int, error) {
	if c.read > 0 {
		if err := refresh(&c.readDL, c.read, c.Conn.SetReadDeadline); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(b)
}

func (c *idleTimeoutConn) Write(b []byte) (int, error) {
	if c.write > 0 {
		if err := refresh(&c.writeDL, c.write, c.Conn.SetWriteDeadline); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(b)
}

func refresh(dl *time.Time, timeout time.Duration, set func(time.Time) error) error {
	want := time.Now().Add(timeout)
	if !dl.IsZero() && !dl.After(want) && want.Sub(*dl) < min(timeout/16, time.Second) {
		return nil
	}
	*dl = want
	return set(want)
}

func newTransport(o Options, h2c bool) *http.Transport {
	d := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err}
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		return &idleTimeoutConn{Conn: c, read: o.ReadTimeout, write: o.SendTimeout}, nil
	}
	t := &http.Transport{
		Proxy:               nil, // endpoints are pod IPs; an environment proxy must never apply
		DialContext:         dial,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: o.MaxIdleConnsPerEndpoint,
		IdleConnTimeout:     90 * time.Second,
		// No ResponseHeaderTimeout: idleTimeoutConn bounds every read already, without a timer per request.
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass bodies through as the backend encoded them
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
		MaxResponseHeaderBytes: 1 << 20,
	}
	if h2c {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
		t.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000, SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}
	}
	return t
}
