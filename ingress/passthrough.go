package ingress

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/baregate/baregate/ingress/route"
)

// passthroughListener wraps the TLS listener for ssl-passthrough: while some host of the route table
// has it, each connection's ClientHello is read first, and connections whose SNI names such a host
// are spliced as raw TCP to the host's backend endpoints; all others go on to the HTTPS server with
// the ClientHello replayed.
type passthroughListener struct {
	net.Listener
	table          func() *route.Table
	connectTimeout time.Duration
	logger         klog.Logger

	conns     chan net.Conn
	errs      chan error
	closeOnce sync.Once
	closed    chan struct{}
	next      atomic.Uint32 // rotates over endpoints
	cache     atomic.Pointer[passthroughState]
}

// passthroughState remembers whether a table has passthrough hosts, so that the routes are scanned
// once per table rather than once per connection.
type passthroughState struct {
	table *route.Table
	any   bool
}

// helloTimeout bounds the wait for a ClientHello, so that idle connections cannot pile up unseen.
const helloTimeout = 10 * time.Second

func newPassthroughListener(ln net.Listener, table func() *route.Table, connectTimeout time.Duration) *passthroughListener {
	l := &passthroughListener{
		Listener: ln, table: table, connectTimeout: connectTimeout,
		logger: klog.Background().WithName("ingress-passthrough"),
		conns:  make(chan net.Conn), errs: make(chan error, 1), closed: make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

func (l *passthroughListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *passthroughListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *passthroughListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.errs <- err
			return
		}
		if !l.active() {
			l.hand(c)
			continue
		}
		go l.route(c)
	}
}

func (l *passthroughListener) active() bool {
	t := l.table()
	st := l.cache.Load()
	if st == nil || st.table != t {
		st = &passthroughState{table: t, any: t.HasPassthrough()}
		l.cache.Store(st)
	}
	return st.any
}

// hand gives a connection to the HTTPS server, or closes it when the listener is closed.
func (l *passthroughListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

// route reads the ClientHello and either splices the connection or hands it on.
func (l *passthroughListener) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(helloTimeout))
	sni, hello := peekServerName(c)
	_ = c.SetReadDeadline(time.Time{})
	if be := l.table().Passthrough(sni); be != nil {
		l.splice(c, hello, be, sni)
		return
	}
	l.hand(&replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(hello), c)})
}

func (l *passthroughListener) splice(c net.Conn, hello []byte, be *route.Backend, sni string) {
	defer c.Close()
	eps := be.Endpoints
	if len(eps) == 0 {
		l.logger.V(2).Info("No endpoints for an ssl-passthrough host", "host", sni, "service", be.Service)
		return
	}
	start := int(l.next.Add(1))
	var up net.Conn
	var err error
	for k := range eps { // the next endpoint on a refused connection, as for proxied requests
		ep := eps[(start+k)%len(eps)]
		if up, err = net.DialTimeout("tcp", ep.String(), l.connectTimeout); err == nil {
			break
		}
	}
	if up == nil {
		l.logger.V(2).Info("No endpoint of an ssl-passthrough host accepted a connection", "host", sni, "service", be.Service, "err", err)
		return
	}
	defer up.Close()
	if _, err := up.Write(hello); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		closeWrite(up)
	}()
	_, _ = io.Copy(c, up)
	closeWrite(c)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		_ = c.Close()
	}
}

// peekServerName reads one ClientHello from c (through crypto/tls's own parser, stopped right after
// it) and returns its SNI and every byte read, to replay. The SNI is empty when the bytes are not a
// ClientHello.
func peekServerName(c net.Conn) (string, []byte) {
	var buf bytes.Buffer
	var sni string
	errStop := errors.New("stop after the ClientHello")
	_ = tls.Server(readOnlyConn{r: io.TeeReader(c, &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = h.ServerName
			return nil, errStop
		},
	}).Handshake()
	return sni, buf.Bytes()
}

// readOnlyConn feeds crypto/tls the client's bytes and swallows what it would answer.
type readOnlyConn struct{ r io.Reader }

func (c readOnlyConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (readOnlyConn) Write(p []byte) (int, error)        { return 0, io.ErrClosedPipe }
func (readOnlyConn) Close() error                       { return nil }
func (readOnlyConn) LocalAddr() net.Addr                { return nil }
func (readOnlyConn) RemoteAddr() net.Addr               { return nil }
func (readOnlyConn) SetDeadline(t time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(t time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(t time.Time) error { return nil }

// replayConn is a connection whose first bytes were already read: they are read again first.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
