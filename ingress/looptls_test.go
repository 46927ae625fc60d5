package ingress

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/internal/testutil"
)

// Tests of the event loops serving TLS connections (proxy.LoopConn), through the HTTPS listener: the
// handshake runs in the accept goroutine, then an HTTP/1.1 connection is served by a loop that reads
// its records without blocking and writes them into its own buffer. What differs from plain
// connections: records hold several requests or part of one, the handshake may have read the first
// request, the socket's readiness says nothing of the records crypto/tls holds, writes are whole
// records, and a close sends close_notify.

// loopTLSHarness is a harness whose routes send every request to a loopBackend.
func loopTLSHarness(t *testing.T) *harness {
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(simple("", "loop", be.addr))
	return h
}

// tlsVersions are the client versions the tests alternate.
var tlsVersions = []uint16{tls.VersionTLS12, tls.VersionTLS13}

func tlsName(v uint16) string {
	if v == tls.VersionTLS12 {
		return "TLS1.2"
	}
	return "TLS1.3"
}

// clientTLS is a client configuration of one version offering only HTTP/1.1.
func clientTLS(version uint16) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, MinVersion: version, MaxVersion: version}
}

// httpsAddr is the HTTPS listener's address.
func (h *harness) httpsAddr() string { return strings.TrimPrefix(h.httpsURL, "https://") }

// dialTLS connects to the HTTPS listener and completes the handshake.
func (h *harness) dialTLS(t *testing.T, conf *tls.Config) *rawConn {
	t.Helper()
	c, err := tls.Dial("tcp", h.httpsAddr(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// dialTLSOver connects to the HTTPS listener and returns a TLS client (handshake not done) over the
// socket as wrap returns it (the socket itself when wrap is nil), with the socket.
func (h *harness) dialTLSOver(t *testing.T, conf *tls.Config, wrap func(net.Conn) net.Conn) (*rawConn, *tls.Conn, net.Conn) {
	t.Helper()
	raw, err := net.Dial("tcp", h.httpsAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	nc := raw
	if wrap != nil {
		nc = wrap(raw)
	}
	c := tls.Client(nc, conf)
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}, c, raw
}

// waitListener waits for the gauge of open connections of listener to read n.
func (h *harness) waitListener(t *testing.T, listener string, n float64) {
	t.Helper()
	const name = "baregate_ingress_active_connections"
	deadline := time.Now().Add(15 * time.Second)
	for h.metric(name, "listener", listener) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s{listener=%q} = %v, want %v", name, listener, h.metric(name, "listener", listener), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// corkConn holds what the client writes until it reads or flushes, so that the records written
// together reach the server in one segment: the client's last handshake flight with the first
// request.
type corkConn struct {
	net.Conn
	held []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.held = append(c.held, p...)
	return len(p), nil
}

func (c *corkConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *corkConn) flush() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	return err
}

// tlsFirstSession makes a connection with conf and an exchange on it, which leaves a session in its
// cache to resume (TLS 1.3 tickets come after the handshake).
func tlsFirstSession(addr string, conf *tls.Config) error {
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	code, body, err := exchange(c, bufio.NewReader(c), "GET", "GET /session HTTP/1.1\r\nHost: x\r\n\r\n")
	if err != nil || code != 200 || body != echoed("GET", "/session") {
		return fmt.Errorf("GET /session: %d %q %v", code, body, err)
	}
	return nil
}

// tlsClientRun is a client of TestLoopTLSManyClients: keep-alive requests, pipelined in records that
// cut them anywhere, a request split in records written apart, then a 64 KiB response; how the first
// request is sent depends on mode. It returns what went wrong.
func tlsClientRun(addr string, i int, version uint16, mode int) error {
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(25 * time.Second))
	cork := &corkConn{Conn: raw}
	var c *tls.Conn
	first := fmt.Sprintf("/c%d/first?mode=%d", i, mode)
	firstReq := "GET " + first + " HTTP/1.1\r\nHost: x\r\n\r\n"
	switch mode {
	case 0: // the request right after Handshake returns
		c = tls.Client(raw, clientTLS(version))
		if err := c.Handshake(); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		_, err = io.WriteString(c, firstReq)
	case 1: // no handshake of its own: Write runs it and sends the request at once
		c = tls.Client(raw, clientTLS(version))
		_, err = io.WriteString(c, firstReq)
	case 2, 3: // the client's last handshake flight and the request in one segment (over TLS 1.2
		// the client waits for the server's Finished after a full handshake, but not after an
		// abbreviated one: mode 3 resumes a session of an earlier connection)
		conf := clientTLS(version)
		if mode == 3 {
			conf.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			conf.ServerName = "x" // the cache's key; without one, tls.Dial and tls.Client use different ones
			if err := tlsFirstSession(addr, conf); err != nil {
				return fmt.Errorf("the connection before: %w", err)
			}
		}
		c = tls.Client(cork, conf)
		if err := c.Handshake(); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if mode == 3 && !c.ConnectionState().DidResume {
			return errors.New("the session was not resumed")
		}
		if _, err = io.WriteString(c, firstReq); err == nil {
			err = cork.flush()
		}
	}
	if err != nil {
		return fmt.Errorf("the first request: %w", err)
	}
	br := bufio.NewReader(c)
	check := func(method, target, want string) error { return answered(c, br, method, target, want) }
	if err := check("GET", first, echoed("GET", first)); err != nil {
		return err
	}
	if c.ConnectionState().Version != version {
		return fmt.Errorf("negotiated %x, want %x", c.ConnectionState().Version, version)
	}
	rnd := rand.New(rand.NewPCG(uint64(i), uint64(mode)))
	for round := range 3 {
		var pipelined strings.Builder
		var targets []string
		for k := range 4 {
			targets = append(targets, fmt.Sprintf("/c%d/r%d/p%d?k=%d", i, round, k, k))
			fmt.Fprintf(&pipelined, "GET %s HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", targets[k], strings.Repeat("p", rnd.IntN(300)))
		}
		// Records cut anywhere: in a request line, between CR and LF, across two requests.
		all := pipelined.String()
		for len(all) > 0 {
			n := min(len(all), 1+rnd.IntN(200))
			if _, err := io.WriteString(c, all[:n]); err != nil {
				return err
			}
			all = all[n:]
		}
		for _, target := range targets {
			if err := check("GET", target, echoed("GET", target)); err != nil {
				return fmt.Errorf("pipelined: %w", err)
			}
		}
		// One request in records that arrive apart, most of the time.
		target := fmt.Sprintf("/c%d/r%d/split", i, round)
		req := "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n"
		if err := writeApart(c, req, 5, 20); err != nil {
			return err
		}
		if err := check("GET", target, echoed("GET", target)); err != nil {
			return fmt.Errorf("split: %w", err)
		}
	}
	n := 64<<10 + i
	if _, err := fmt.Fprintf(c, "GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n); err != nil {
		return err
	}
	return check("GET", "/big", string(loopBody()[:n]))
}

// TestLoopTLSManyClients: many TLS clients at once, TLS 1.2 and 1.3, whose first request follows the
// handshake at once or comes with its last flight, of a full or a resumed handshake, and whose later requests are pipelined in records
// that cut them anywhere; all are served on the loops.
func TestLoopTLSManyClients(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	const clients = 96
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		version, mode := tlsVersions[i%2], i/2%4
		wg.Go(func() {
			if err := tlsClientRun(h.httpsAddr(), i, version, mode); err != nil {
				errs <- fmt.Errorf("client %d (%s, mode %d): %w", i, tlsName(version), mode, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	const perClient = 1 + 3*5 + 1
	if served, handed := h.fastStats(); served < clients*perClient+clients/4 || handed != 0 {
		t.Errorf("the fast path served %d requests and handed %d connections to net/http, want %d and 0", served, handed, clients*perClient+clients/4)
	}
	h.waitListener(t, "https", 0)
}

// TestLoopTLSBackpressure: a TLS client that reads a large response slowly gets it whole, while the
// other TLS clients of the listener, some on its loop, are served.
func TestLoopTLSBackpressure(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	// A small receive window: the loop's writes of records to this client find its socket full.
	slow, resp := getBigSlowly(t, h.httpsAddr(), clientTLS(tls.VersionTLS13))

	// More clients than loops, of both versions: some share the slow client's loop.
	fast := make([]*rawConn, 5)
	for i := range fast {
		fast[i] = h.dialTLS(t, clientTLS(tlsVersions[i%2]))
		fast[i].get(fmt.Sprintf("/fast%d", i))
	}
	var got int64
	var sum []byte
	served := meanwhile(t, fast, func(i, k int) (string, string) {
		// Echoes, and bodies of up to 16 KiB: records of all sizes up to the largest, built in the
		// loop's TLS buffer while the slow client's records may wait for its socket.
		if k%2 == 1 {
			n := 100 + (k*1543+i*4099)%(16<<10)
			return fmt.Sprintf("/big?n=%d", n), string(loopBody()[:n])
		}
		target := fmt.Sprintf("/during%d?k=%d", i, k)
		return target, echoed("GET", target)
	}, func() {
		got, sum = readSlowly(t, resp.Body, 2<<20, 200*time.Millisecond) // long enough for the loop to find the socket full
	})
	checkLoopBody(t, got, sum)
	for i, n := range served {
		if n == 0 {
			t.Errorf("fast client %d got no answer while the slow one read", i)
		}
	}
	slow.get("/after?slow")
	if _, handed := h.fastStats(); handed != 0 {
		t.Errorf("%d connections handed to net/http, want none", handed)
	}
}

// TestLoopTLSHandOffs: a TLS connection leaves its loop for a goroutine in the middle (a POST with a
// body, a chunked response); the goroutine goes on with the records the loop had read and with
// crypto/tls's state, and answers in order.
func TestLoopTLSHandOffs(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	chunked, big := chunkedStep(), bigStep()
	for _, tc := range []struct {
		name  string
		steps [][]step
	}{
		{"a POST", [][]step{getSteps("a", 3), {postStep("/p", "hello")}, getSteps("b", 3), {big}}},
		{"a POST of 100 KiB", [][]step{getSteps("a", 2), {postStep("/r", strings.Repeat("r", 100<<10))}, getSteps("b", 2)}},
		{"a chunked response", [][]step{getSteps("a", 3), {chunked}, {big}, getSteps("b", 2)}},
	} {
		steps := slices.Concat(tc.steps...)
		for _, version := range tlsVersions {
			for _, pipelined := range []bool{false, true} {
				rc := h.dialTLS(t, clientTLS(version))
				rc.play(fmt.Sprintf("%s, %s, pipelined %v", tc.name, tlsName(version), pipelined), steps, pipelined, nil)
				rc.c.Close()
			}
		}
	}
	if _, handed := h.fastStats(); handed != 0 {
		t.Errorf("%d connections handed to net/http, want none", handed)
	}
	h.waitListener(t, "https", 0)
}

// recordTypes records the content types of the TLS records a client receives, read from their
// plaintext headers (meaningful over TLS 1.2, where an alert is sent as an alert record).
type recordTypes struct {
	net.Conn
	mu    sync.Mutex
	buf   []byte
	types []byte
}

func (r *recordTypes) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.buf = append(r.buf, p[:n]...)
	for len(r.buf) >= 5 {
		size := 5 + (int(r.buf[3])<<8 | int(r.buf[4]))
		if len(r.buf) < size {
			break
		}
		r.types = append(r.types, r.buf[0])
		r.buf = r.buf[size:]
	}
	r.mu.Unlock()
	return n, err
}

// TestLoopTLSClose: after Connection: close the client reads the response, then close_notify and the
// end of the connection, without a reset; a client that leaves in the middle of a response does not
// disturb the others, and the connections are let go of.
func TestLoopTLSClose(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	for _, version := range tlsVersions {
		// Requests behind the one with Connection: close are not answered; the server reads them
		// before it closes, so that they cause no reset.
		for _, tc := range []struct{ target, behind string }{{"/close", ""}, {"/big?n=300000", ""}, {"/close", "GET /unread HTTP/1.1\r\nHost: x\r\n\r\n"}} {
			target := tc.target
			rt := &recordTypes{}
			rc, c, raw := h.dialTLSOver(t, clientTLS(version), func(nc net.Conn) net.Conn { rt.Conn = nc; return rt })
			rc.get("/first")
			rc.send("GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + tc.behind)
			resp, body := rc.read("GET")
			if resp.StatusCode != 200 || !resp.Close {
				t.Fatalf("%s, %s: %d, close %v", tlsName(version), target, resp.StatusCode, resp.Close)
			}
			if want := echoed("GET", target); target == "/close" && body != want {
				t.Fatalf("%s: %q, want %q", tlsName(version), body, want)
			} else if target != "/close" && body != string(loopBody()[:300000]) {
				t.Fatalf("%s: %d bytes, not the body", tlsName(version), len(body))
			}
			// crypto/tls reports close_notify as io.EOF; a reset would be an error.
			if n, err := rc.br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("%s, %s: after the response: %d bytes, %v, want io.EOF", tlsName(version), target, n, err)
			}
			// And the TCP connection ends there too, without a reset.
			if n, err := raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("%s, %s: the socket after close_notify: %d bytes, %v, want io.EOF", tlsName(version), target, n, err)
			}
			rt.mu.Lock()
			types := slices.Clone(rt.types)
			rt.mu.Unlock()
			const alert = 21
			if version == tls.VersionTLS12 && (len(types) == 0 || types[len(types)-1] != alert) {
				t.Errorf("%s, %s: the last record received is of type %v, want an alert (close_notify)", tlsName(version), target, types[max(0, len(types)-1):])
			}
			c.Close()
		}
	}

	// Clients that leave before the response, after its head, within its body; the others on the
	// listener are answered meanwhile and after.
	others := make([]*rawConn, 4)
	for i := range others {
		others[i] = h.dialTLS(t, clientTLS(tlsVersions[i%2]))
		others[i].get(fmt.Sprintf("/other%d", i))
	}
	for i := range 12 {
		h.dialTLS(t, clientTLS(tlsVersions[i%2])).goAway(i, int64(50000*i))
		for k, o := range others {
			o.get(fmt.Sprintf("/other%d?after=%d", k, i))
		}
	}
	rc := h.dialTLS(t, clientTLS(tls.VersionTLS13))
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.read("GET"); resp.StatusCode != 200 || body != string(loopBody()) {
		t.Fatalf("GET /big after the disconnects: %d, %d bytes", resp.StatusCode, len(body))
	}
	rc.c.Close()
	for _, o := range others {
		o.c.Close()
	}
	h.waitListener(t, "https", 0)
}

// corruptConn flips a bit in the last byte of the next write once armed: the authentication tag
// of the record being sent.
type corruptConn struct {
	net.Conn
	armed bool
}

func (c *corruptConn) Write(p []byte) (int, error) {
	if c.armed && len(p) > 0 {
		c.armed = false
		p = slices.Clone(p)
		p[len(p)-1] ^= 1
	}
	return c.Conn.Write(p)
}

// TestLoopTLSGarbage: a TLS client that sends a corrupted record, or bytes that are no record, after
// the handshake has its connection closed; the other clients on the listener are unaffected.
func TestLoopTLSGarbage(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	others := make([]*rawConn, 4)
	for i := range others {
		others[i] = h.dialTLS(t, clientTLS(tlsVersions[i%2]))
		others[i].get(fmt.Sprintf("/other%d", i))
	}
	garbage := map[string]func(c *tls.Conn, cc *corruptConn) error{
		"a record with a bad tag": func(c *tls.Conn, cc *corruptConn) error {
			cc.armed = true
			_, err := io.WriteString(c, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
			return err
		},
		"plaintext HTTP": func(_ *tls.Conn, cc *corruptConn) error {
			_, err := io.WriteString(cc.Conn, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
			return err
		},
		"an application record of random bytes": func(_ *tls.Conn, cc *corruptConn) error {
			rec := append([]byte{23, 3, 3, 0, 64}, bytes.Repeat([]byte{0x5a}, 64)...)
			_, err := cc.Conn.Write(rec)
			return err
		},
		"half a record header": func(_ *tls.Conn, cc *corruptConn) error {
			_, err := cc.Conn.Write([]byte{23, 3})
			if err == nil {
				err = cc.Conn.(*net.TCPConn).CloseWrite()
			}
			return err
		},
	}
	for name, send := range garbage {
		for _, version := range tlsVersions {
			for _, used := range []bool{false, true} {
				cc := &corruptConn{}
				rc, c, raw := h.dialTLSOver(t, clientTLS(version), func(nc net.Conn) net.Conn { cc.Conn = nc; return cc })
				if err := c.Handshake(); err != nil {
					t.Fatal(err)
				}
				if used {
					rc.get("/before")
				}
				if err := send(c, cc); err != nil {
					t.Fatalf("%s, %s: sending: %v", name, tlsName(version), err)
				}
				// The server closes: the client reads an alert, or the end of the connection, and no
				// response.
				buf := make([]byte, 4096)
				n, err := rc.br.Read(buf)
				if err == nil {
					t.Errorf("%s, %s, used %v: the server answered %q", name, tlsName(version), used, buf[:n])
				}
				// An alert crypto/tls received reads "remote error: tls: ...".
				if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !strings.Contains(err.Error(), "remote error: tls: ") {
					t.Errorf("%s, %s, used %v: the client read %v, want an alert or the end", name, tlsName(version), used, err)
				}
				// Whatever crypto/tls said, the socket ends.
				raw.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.Copy(io.Discard, raw); err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s, %s, used %v: the connection stayed open: %v", name, tlsName(version), used, err)
				}
				raw.Close()
				for k, o := range others {
					o.get(fmt.Sprintf("/other%d?after=%s", k, strings.ReplaceAll(name, " ", "-")))
				}
			}
		}
	}
	for _, o := range others {
		o.c.Close()
	}
	h.waitListener(t, "https", 0)
}

// TestLoopTLSALPN: a client offering h2 gets HTTP/2 from net/http; one offering only http/1.1, or no
// ALPN at all, is served by a loop, without a goroutine of its own. Not parallel: it counts the
// process's goroutines.
func TestLoopTLSALPN(t *testing.T) {
	const perConn = "proxy.(*ConnServer).run"
	h := loopTLSHarness(t)

	h2 := tlsClient("")
	resp, err := h2.Get(h.httpsURL + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h2.CloseIdleConnections()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != echoed("GET", "/h2") {
		t.Fatalf("offering h2: %s %d %q", resp.Proto, resp.StatusCode, body)
	}

	served0, _ := h.fastStats()
	before := goroutinesIn(perConn)
	var rcs []*rawConn
	for i := range 10 {
		conf := clientTLS(tlsVersions[i%2])
		if i >= 5 {
			conf.NextProtos = nil
		}
		rc := h.dialTLS(t, conf)
		if p := rc.c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != strings.Join(conf.NextProtos, "") {
			t.Fatalf("ALPN %v: negotiated %q", conf.NextProtos, p)
		}
		rc.get(fmt.Sprintf("/c%d", i))
		rcs = append(rcs, rc)
	}
	if n := goroutinesIn(perConn) - before; n > 0 {
		t.Errorf("%d goroutines serve the 10 HTTP/1.1 TLS connections, want none", n)
	}
	if served, handed := h.fastStats(); served-served0 != 10 || handed != 0 {
		t.Errorf("the fast path served %d requests and handed %d connections, want 10 and 0", served-served0, handed)
	}
	// A request with a body takes its connection off the loop to a goroutine.
	before = goroutinesIn(perConn)
	rcs[0].send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	rcs[0].expect("POST", 200, "POST /p ? [hi]")
	if n := goroutinesIn(perConn) - before; n < 1 {
		t.Errorf("after a POST: %d goroutines serve the connections, want 1", n)
	}
	h.waitListener(t, "https", 10)
	for _, rc := range rcs {
		rc.c.Close()
	}
	h.waitListener(t, "https", 0)
}

// TestLoopTLSHalfClosed: a TLS client that ends its side after pipelined requests, with close_notify
// or with a bare FIN, gets all their answers and then the end of the connection.
func TestLoopTLSHalfClosed(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	for _, version := range tlsVersions {
		for _, notify := range []bool{true, false} {
			for _, n := range []int{1, 3} {
				rc, c, raw := h.dialTLSOver(t, clientTLS(version), nil)
				rc.get("/first")
				var reqs strings.Builder
				for i := range n {
					fmt.Fprintf(&reqs, "GET /h%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
				}
				rc.send(reqs.String())
				var err error
				if notify {
					err = c.CloseWrite()
				} else {
					err = raw.(*net.TCPConn).CloseWrite()
				}
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					rc.expect("GET", 200, echoed("GET", fmt.Sprintf("/h%d", i)))
				}
				if m, err := rc.br.Read(make([]byte, 1)); m != 0 || err != io.EOF {
					t.Errorf("%s, close_notify %v, %d requests: after the answers: %d bytes, %v, want io.EOF", tlsName(version), notify, n, m, err)
				}
				c.Close()
			}
		}
	}
	h.waitListener(t, "https", 0)
}

// TestLoopTLSResetAfterBadRecord: a client that sends a corrupted record and resets the connection
// at once is closed quietly. crypto/tls answers the record with an alert the loop then fails to
// write. Not parallel: it captures klog's output, where a panic the loop recovered from shows.
func TestLoopTLSResetAfterBadRecord(t *testing.T) {
	// Only the outputs, which klog guards with its lock: klog.CaptureState's Restore also rewrites
	// what other goroutines read without it. Tests run with -logtostderr's default, true.
	var logs testutil.SyncBuffer
	klog.SetOutput(io.Discard)
	klog.SetOutputBySeverity("INFO", &logs) // the INFO log has every message once
	klog.LogToStderr(false)
	t.Cleanup(func() { klog.LogToStderr(true) })
	h := loopTLSHarness(t)
	other := h.dialTLS(t, clientTLS(tls.VersionTLS13))
	for i := range 40 {
		cc := &corruptConn{}
		_, c, raw := h.dialTLSOver(t, clientTLS(tlsVersions[i%2]), func(nc net.Conn) net.Conn { cc.Conn = nc; return cc })
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		if i%4 >= 2 { // a used connection, with an answer unread
			if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		cc.armed = true
		if _, err := io.WriteString(c, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := raw.(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		other.get(fmt.Sprintf("/other?after=%d", i))
	}
	other.c.Close()
	h.waitListener(t, "https", 0)
	if n := strings.Count(logs.String(), "Panic in the event loop"); n > 0 {
		t.Errorf("the loop panicked %d times for 40 clients that reset after a bad record:\n%.2000s", n, logs.String())
	}
}

// TestLoopTLSShutdown: stopping the Ingress closes the loops' idle TLS connections with
// close_notify, lets a request in flight finish, then closes its connection the same way.
func TestLoopTLSShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stop := h.stop
	be, arrived, release := holdingBackend(t)
	h.apply(simple("", "slow", be.addr))
	type conn struct {
		rc  *rawConn
		raw net.Conn
		rt  *recordTypes
	}
	dial := func(version uint16) conn {
		rt := &recordTypes{}
		rc, _, raw := h.dialTLSOver(t, clientTLS(version), func(nc net.Conn) net.Conn { rt.Conn = nc; return rt })
		rc.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
		rc.expect("GET", 200, "done /first")
		return conn{rc, raw, rt}
	}
	// closedNotified checks that the server ended c with close_notify (seen in the record types over
	// TLS 1.2) and a FIN.
	closedNotified := func(what string, version uint16, c conn) {
		t.Helper()
		if n, err := c.rc.br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("%s (%s): %d bytes, %v, want io.EOF", what, tlsName(version), n, err)
		}
		if n, err := c.raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("%s (%s): the socket: %d bytes, %v, want io.EOF", what, tlsName(version), n, err)
		}
		c.rt.mu.Lock()
		types := slices.Clone(c.rt.types)
		c.rt.mu.Unlock()
		if version == tls.VersionTLS12 && (len(types) == 0 || types[len(types)-1] != 21) {
			t.Errorf("%s (%s): the last record is of type %v, want an alert (close_notify)", what, tlsName(version), types[max(0, len(types)-1):])
		}
	}
	var idle []conn
	for i := range 6 {
		idle = append(idle, dial(tlsVersions[i%2]))
	}
	busy := dial(tls.VersionTLS12)
	busy.rc.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	if served, handed := h.fastStats(); served != 8 || handed != 0 { // the one in flight counts
		t.Fatalf("the fast path served %d requests and handed %d connections, want 8 and 0", served, handed)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	for i, c := range idle {
		closedNotified(fmt.Sprintf("idle connection %d during the shutdown", i), tlsVersions[i%2], c)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	busy.rc.expect("GET", 200, "done /slow")
	closedNotified("the connection of the request in flight, after its response", tls.VersionTLS12, busy)
	if err := <-stopped; err != nil {
		t.Errorf("Run: %v", err)
	}
	h.waitListener(t, "https", 0)
}

// TestLoopTLSPipelinedBurst: hundreds of requests in full-size records, written while the answers
// come: crypto/tls holds decrypted and undecrypted requests the socket's readiness does not show,
// and the connection may leave the loop with them.
func TestLoopTLSPipelinedBurst(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	const n = 400
	for _, version := range tlsVersions {
		for _, post := range []int{-1, 2, 333} { // the request that takes the connection off the loop
			rc := h.dialTLS(t, clientTLS(version))
			var reqs strings.Builder
			for i := range n {
				if i == post {
					fmt.Fprintf(&reqs, "POST /burst%d?i=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", i, i)
					continue
				}
				fmt.Fprintf(&reqs, "GET /burst%d?i=%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", i, i, strings.Repeat("p", i%50))
			}
			written := make(chan error, 1)
			go func() {
				_, err := io.WriteString(rc.c, reqs.String())
				written <- err
			}()
			for i := range n {
				if i == post {
					rc.expect("POST", 200, fmt.Sprintf("POST /burst%d ?i=%d [hello]", i, i))
					continue
				}
				rc.expect("GET", 200, echoed("GET", fmt.Sprintf("/burst%d?i=%d", i, i)))
			}
			if err := <-written; err != nil {
				t.Fatal(err)
			}
			rc.get("/after")
			rc.c.Close()
		}
	}
	if _, handed := h.fastStats(); handed != 0 {
		t.Errorf("%d connections handed to net/http, want none", handed)
	}
	h.waitListener(t, "https", 0)
}

// tls13Dir is one direction of a TLS 1.3 connection's application traffic, which the test encrypts or
// decrypts itself: crypto/tls has no API to send a KeyUpdate.
type tls13Dir struct {
	suite  uint16
	secret []byte
	aead   cipher.AEAD
	iv     []byte
	seq    uint64
}

func (d *tls13Dir) hash() func() hash.Hash {
	if d.suite == tls.TLS_AES_256_GCM_SHA384 {
		return sha512.New384
	}
	return sha256.New
}

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context.
func (d *tls13Dir) expandLabel(label string, n int) []byte {
	full := "tls13 " + label
	info := append([]byte{byte(n >> 8), byte(n), byte(len(full))}, full...)
	out, err := hkdf.Expand(d.hash(), d.secret, string(append(info, 0)), n)
	if err != nil {
		panic(err)
	}
	return out
}

func (d *tls13Dir) setSecret(secret []byte) error {
	d.secret, d.seq = secret, 0
	keyLen := 16
	if d.suite != tls.TLS_AES_128_GCM_SHA256 {
		keyLen = 32
	}
	key := d.expandLabel("key", keyLen)
	d.iv = d.expandLabel("iv", 12)
	if d.suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		aead, err := chacha20poly1305.New(key)
		d.aead = aead
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	d.aead, err = cipher.NewGCM(block)
	return err
}

// update moves to the next traffic secret, as after a KeyUpdate.
func (d *tls13Dir) update() error {
	return d.setSecret(d.expandLabel("traffic upd", len(d.secret)))
}

func (d *tls13Dir) nonce() []byte {
	n := slices.Clone(d.iv)
	for i := range 8 {
		n[len(n)-1-i] ^= byte(d.seq >> (8 * i))
	}
	d.seq++
	return n
}

// seal returns a record of content of the given type.
func (d *tls13Dir) seal(typ byte, content []byte) []byte {
	n := len(content) + 1 + d.aead.Overhead()
	hdr := []byte{23, 3, 3, byte(n >> 8), byte(n)}
	return d.aead.Seal(hdr, d.nonce(), append(slices.Clone(content), typ), hdr)
}

// open reads a record from r and returns its content type and content.
func (d *tls13Dir) open(r io.Reader) (byte, []byte, error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, err
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	plain, err := d.aead.Open(nil, d.nonce(), body, hdr)
	if err != nil {
		return 0, nil, fmt.Errorf("record of type %d: %w", hdr[0], err)
	}
	plain = bytes.TrimRight(plain, "\x00")
	if len(plain) == 0 {
		return 0, nil, errors.New("a record without content type")
	}
	return plain[len(plain)-1], plain[:len(plain)-1], nil
}

// TestLoopTLSKeyUpdate: a TLS 1.3 client that updates its keys and asks the server to update its own
// gets the server's KeyUpdate (which the loop writes while reading) and its answers under the new
// keys, on the loop and after a request that takes the connection off it.
func TestLoopTLSKeyUpdate(t *testing.T) {
	t.Parallel()
	h := loopTLSHarness(t)
	for _, handOff := range []bool{false, true} {
		var keys bytes.Buffer
		conf := clientTLS(tls.VersionTLS13)
		conf.KeyLogWriter = &keys
		_, c, raw := h.dialTLSOver(t, conf, nil)
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		// From here on the test speaks TLS itself on raw.
		secrets := map[string][]byte{}
		for line := range strings.Lines(keys.String()) {
			f := strings.Fields(line)
			if len(f) == 3 {
				secrets[f[0]], _ = hex.DecodeString(f[2])
			}
		}
		suite := c.ConnectionState().CipherSuite
		out, in := &tls13Dir{suite: suite}, &tls13Dir{suite: suite}
		if err := out.setSecret(secrets["CLIENT_TRAFFIC_SECRET_0"]); err != nil {
			t.Fatal(err)
		}
		if err := in.setSecret(secrets["SERVER_TRAFFIC_SECRET_0"]); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(raw)
		// exchange sends req in one record and reads the answer's records until it holds want's
		// body, counting the KeyUpdates the server sent before.
		exchange := func(req, want string) int {
			t.Helper()
			if _, err := raw.Write(out.seal(23, []byte(req))); err != nil {
				t.Fatal(err)
			}
			var got []byte
			updates := 0
			for !bytes.HasSuffix(got, []byte("\r\n\r\n"+want)) {
				typ, content, err := in.open(br)
				if err != nil {
					t.Fatalf("%.20q: after %q: %v", req, got, err)
				}
				switch {
				case typ == 23:
					got = append(got, content...)
				case typ == 22 && len(content) > 0 && content[0] == 24: // KeyUpdate
					updates++
					if err := in.update(); err != nil {
						t.Fatal(err)
					}
				case typ == 22 && len(content) > 0 && content[0] == 4: // NewSessionTicket
				default:
					t.Fatalf("%.20q: a record of type %d: %x", req, typ, content)
				}
			}
			if !bytes.HasPrefix(got, []byte("HTTP/1.1 200 OK\r\n")) {
				t.Errorf("%.20q: %q", req, got)
			}
			return updates
		}
		get := func(target string) int {
			return exchange("GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n", echoed("GET", target))
		}
		if n := get("/before"); n != 0 {
			t.Fatalf("%d KeyUpdates before the client's", n)
		}
		// The KeyUpdate, update_requested, then requests under the new key; the server's KeyUpdate
		// comes before the answer.
		if _, err := raw.Write(out.seal(22, []byte{24, 0, 0, 1, 1})); err != nil {
			t.Fatal(err)
		}
		if err := out.update(); err != nil {
			t.Fatal(err)
		}
		var updates int
		if handOff {
			updates = exchange("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "POST /p ? [hi]")
		} else {
			updates = get("/after-update")
		}
		if updates != 1 {
			t.Errorf("hand-off %v: %d KeyUpdates from the server, want 1", handOff, updates)
		}
		if n := get("/next"); n != 0 {
			t.Errorf("hand-off %v: %d more KeyUpdates, want none", handOff, n)
		}
		raw.Close()
	}
	if _, handed := h.fastStats(); handed != 0 {
		t.Errorf("%d connections handed to net/http, want none", handed)
	}
}
