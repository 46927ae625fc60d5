package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/ingress/proxy"
	"github.com/baregate/baregate/ingress/proxyproto"
)

type listeners struct {
	servers []*http.Server
	lns     []net.Listener
	tls     []bool
	// The fast path of each listener (nil when disabled): it accepts the connections, terminates
	// TLS and serves plain HTTP/1.x requests itself, handing connections to the http.Server (through
	// handed) for anything else.
	fast    []*proxy.ConnServer
	handed  []*handoverListener
	tlsConf []*tls.Config
	active  []prometheus.Gauge
	closing atomic.Bool
}

// handshakeTimeout bounds a TLS handshake, as http.Server bounds it by its ReadHeaderTimeout.
const handshakeTimeout = 60 * time.Second

// tlsConfig picks the certificate by SNI from the route table in force, so certificate changes
// apply to new handshakes without touching established connections.
func (i *Ingress) tlsConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if i.cfg.Certificates != nil {
		protos = append(protos, acme.ALPNProto) // tls-alpn-01 validation handshakes
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{ // TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 ones are fixed
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: protos,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if src := i.cfg.Certificates; src != nil {
				if c, err := src.GetCertificate(hello); c != nil || err != nil {
					return c, err
				}
			}
			if t := i.proxy.Table(); t != nil {
				if c := t.Certs.Lookup(hello.ServerName); c != nil {
					return c, nil
				}
			}
			return i.defCert, nil
		},
	}
}

func (i *Ingress) listen() (*listeners, error) {
	l := &listeners{}
	add := func(addr string, useTLS bool) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listening for ingress traffic on %s: %w", addr, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if i.cfg.ProxyProtocol {
			ln = &proxyproto.Listener{Listener: ln, Timeout: 10 * time.Second}
		}
		if useTLS { // ssl-passthrough hosts are spliced before TLS is terminated
			ln = newPassthroughListener(ln, i.proxy.Table, i.cfg.ConnectTimeout)
		}
		scheme := "http"
		protos := new(http.Protocols)
		protos.SetHTTP1(true)
		if useTLS {
			scheme = "https"
			protos.SetHTTP2(true)
		} else {
			protos.SetUnencryptedHTTP2(true) // gRPC clients speak h2c with prior knowledge
		}
		active := i.metrics.active.WithLabelValues(scheme)
		handler := i.proxy.Handler(scheme, port)
		if !useTLS && i.cfg.Certificates != nil {
			handler = i.cfg.Certificates.HTTPHandler(handler) // http-01 answers, before routing
		}
		srv := &http.Server{
			Handler:           handler,
			Protocols:         protos,
			ReadHeaderTimeout: 60 * time.Second,
			IdleTimeout:       75 * time.Second, // nginx's keepalive_timeout
			MaxHeaderBytes:    1 << 20,
			ErrorLog:          log.New(serverLog{}, "", 0),
			ConnState: func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					active.Inc()
				case http.StateClosed, http.StateHijacked:
					active.Dec()
				}
			},
		}
		var ownTLS *tls.Config
		if useTLS {
			srv.TLSConfig = i.tlsConfig()
			ownTLS = i.tlsConfig() // net/http may amend its own
		}
		var fast *proxy.ConnServer
		var handed *handoverListener
		if !i.cfg.DisableFastPath {
			handed = newHandoverListener(ln.Addr())
			var slow func(string) bool
			if !useTLS && i.cfg.Certificates != nil {
				slow = func(path string) bool { return strings.HasPrefix(path, "/.well-known/acme-challenge/") }
			}
			loops := 0
			if !i.cfg.ProxyProtocol && !i.cfg.DisableEventLoop {
				loops = runtime.GOMAXPROCS(0) // a PROXY connection is no *net.TCPConn anyway
			}
			fast = i.proxy.ConnServer(proxy.ConnServerOptions{
				Scheme: scheme, Port: port, Handover: handed.hand, Slow: slow,
				ReadHeaderTimeout: srv.ReadHeaderTimeout, IdleTimeout: srv.IdleTimeout,
				EventLoops: loops, Done: active.Dec,
			})
		}
		l.servers, l.lns, l.tls = append(l.servers, srv), append(l.lns, ln), append(l.tls, useTLS)
		l.fast, l.handed, l.tlsConf, l.active = append(l.fast, fast), append(l.handed, handed), append(l.tlsConf, ownTLS), append(l.active, active)
		return nil
	}
	if err := errors.Join(add(i.cfg.HTTPAddress, false), add(i.cfg.HTTPSAddress, true)); err != nil {
		for _, ln := range l.lns {
			ln.Close()
		}
		return nil, err
	}
	return l, nil
}

func (l *listeners) serve(errc chan<- error) {
	for k, srv := range l.servers {
		go func() {
			var err error
			switch {
			case l.fast[k] != nil:
				go l.accept(k, errc)
				err = srv.Serve(l.handed[k])
			case l.tls[k]:
				err = srv.ServeTLS(l.lns[k], "", "")
			default:
				err = srv.Serve(l.lns[k])
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
}

// accept runs the fast path's accept loop of listener k. Accept errors other than the listener's
// closing are retried after a pause, as http.Server does (running out of file descriptors).
func (l *listeners) accept(k int, errc chan<- error) {
	var pause time.Duration
	for {
		c, err := l.lns[k].Accept()
		if err != nil {
			if l.closing.Load() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("accepting connections: %w", err)
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			klog.Background().WithName("ingress").V(2).Info("Accepting a connection failed; retrying", "err", err, "after", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		go l.serveConn(k, c)
	}
}

// serveConn terminates TLS on a connection of listener k and serves it on the fast path, unless ALPN
// chose another protocol than HTTP/1.1 (h2, acme-tls/1): those go to the http.Server as they are.
func (l *listeners) serveConn(k int, c net.Conn) {
	active := l.active[k]
	active.Inc() // the fast path's Done decrements it
	if conf := l.tlsConf[k]; conf != nil {
		tc := tls.Server(l.fast[k].WrapTLS(c), conf) // an event loop may serve it after the handshake
		_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			klog.Background().WithName("ingress").V(4).Info("HTTP server", "msg", "TLS handshake error", "client", c.RemoteAddr().String(), "err", err)
			c.Close()
			active.Dec()
			return
		}
		_ = c.SetDeadline(time.Time{})
		if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
			active.Dec() // net/http counts it
			l.handed[k].hand(tc)
			return
		}
		c = tc
	}
	l.fast[k].ServeConn(c)
}

func (l *listeners) shutdown(ctx context.Context) {
	l.closing.Store(true)
	for k, fast := range l.fast {
		if fast != nil {
			l.lns[k].Close()
			if err := fast.Shutdown(ctx); err != nil {
				klog.Background().WithName("ingress").V(2).Info("Shutting down the ingress listener", "err", err)
			}
		}
	}
	for _, srv := range l.servers {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
}

// handoverListener yields the connections the fast path hands to net/http.
type handoverListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoverListener(addr net.Addr) *handoverListener {
	return &handoverListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoverListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *handoverListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoverListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoverListener) Addr() net.Addr { return l.addr }

// addrs returns the bound addresses (tests listen on port 0).
func (l *listeners) addrs() []net.Addr {
	var out []net.Addr
	for _, ln := range l.lns {
		out = append(out, ln.Addr())
	}
	return out
}

// serverLog sends net/http's server errors (mostly clients failing TLS handshakes) to klog at a
// verbosity where they do not drown the log.
type serverLog struct{}

func (serverLog) Write(p []byte) (int, error) {
	klog.Background().WithName("ingress").V(4).Info("HTTP server", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

type serverMetrics struct {
	active *prometheus.GaugeVec
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "baregate_ingress_active_connections",
		Help: "Client connections open on the ingress listeners, by listener (http, https).",
	}, []string{"listener"})}
	if reg != nil {
		if err := reg.Register(m.active); err != nil {
			return nil, fmt.Errorf("registering ingress connection metrics: %w", err)
		}
	}
	return m, nil
}
