package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baregate/baregate/ingress/annotations"
	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/ingress/route"
	"github.com/baregate/baregate/internal/cluster"
)

// Tests of the event loops from inside: one loop, so that every client shares it, short client
// timeouts, and the loop's own count of its connections. ingress/loop_test.go tests them through
// the listeners.

// loopServer is a ConnServer with one event loop in front of one backend, on loopback.
type loopServer struct {
	p      *Proxy
	s      *ConnServer
	addr   string
	done   atomic.Int64 // connections the server is done with (ConnServerOptions.Done)
	handed atomic.Int64
	dialed atomic.Int64 // connections the backend accepted
	closed atomic.Int64 // and those it saw closed
	cb     *cluster.Builder
	gen    uint64
}

// startLoopServer starts the server in front of backend, which is the Service's only endpoint but
// for the extra ones given (ip:port), with the proxy's options popts.
func startLoopServer(t *testing.T, backend http.HandlerFunc, opts ConnServerOptions, popts Options, extra ...string) *loopServer {
	t.Helper()
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &loopServer{}
	bsrv := &http.Server{Handler: backend, ConnState: func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			ls.dialed.Add(1)
		case http.StateClosed:
			ls.closed.Add(1)
		}
	}}
	go bsrv.Serve(bln)
	t.Cleanup(func() { bsrv.Close() })

	p, err := New(popts, nil)
	if err != nil {
		t.Fatal(err)
	}
	cb := cluster.NewBuilder("node1", annotations.SecretRefs)
	cb.Set(fx.Class())
	cb.Set(fx.Service("svc", 80))
	cb.Set(fx.Slice("svc", "svc-1", fx.EP{Addr: bln.Addr().String(), Node: "node1"}))
	for i, addr := range extra {
		cb.Set(fx.Slice("svc", fmt.Sprint("svc-extra-", i), fx.EP{Addr: addr, Node: "node1"}))
	}
	cb.Set(fx.Ingress("ing", 0, fx.Rule("", fx.Path("Prefix", "/", fx.Backend("svc", 80)))))
	ls.p, ls.cb = p, cb
	ls.swap(t)
	opts.Scheme, opts.Port, opts.EventLoops = "http", 80, 1
	opts.Handover = func(c net.Conn) { ls.handed.Add(1); c.Close() }
	opts.Done = func() { ls.done.Add(1) }
	ls.s = p.ConnServer(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go ls.s.ServeConn(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ls.s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return ls
}

// swap builds the route table from ls.cb and swaps it in.
func (ls *loopServer) swap(t *testing.T) {
	t.Helper()
	ls.gen++
	var rb route.Builder
	tbl, problems := rb.Build(ls.cb.Build(ls.gen, time.Now()))
	if len(problems) > 0 {
		t.Fatalf("building the route table: %v", problems)
	}
	ls.p.Swap(tbl)
}

type loopClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (ls *loopServer) dial(t *testing.T) *loopClient {
	t.Helper()
	c, err := net.Dial("tcp", ls.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &loopClient{t: t, c: c, br: bufio.NewReader(c)}
}

// get sends a GET of target and returns the response's status and body.
func (lc *loopClient) get(target string) (int, string) {
	lc.t.Helper()
	if _, err := io.WriteString(lc.c, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		lc.t.Fatal(err)
	}
	resp, err := http.ReadResponse(lc.br, &http.Request{Method: "GET"})
	if err != nil {
		lc.t.Fatalf("GET %s: %v", target, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		lc.t.Fatalf("GET %s: reading the body: %v", target, err)
	}
	return resp.StatusCode, string(body)
}

// closed waits for the server to close the connection and reports whether it did, without
// sending anything more.
func (lc *loopClient) closed() bool {
	_, err := lc.br.ReadByte()
	return err == io.EOF
}

// waitFor waits until cond holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after 15s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testBackend answers /big with big (Content-Length framed), /chunked with "chunked" in two chunks,
// /mute not before the proxy gives up, and other paths with the path and the request body.
func testBackend(big string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			io.WriteString(w, big)
		case "/chunked":
			io.WriteString(w, "chunk")
			w.(http.Flusher).Flush()
			io.WriteString(w, "ed")
		case "/mute":
			<-r.Context().Done() // the proxy closed the connection
		default:
			body, _ := io.ReadAll(r.Body)
			io.WriteString(w, r.URL.Path+string(body))
		}
	}
}

// TestLoopClientTimeouts: the loop closes a connection that sends nothing, one idle for IdleTimeout
// after a request, and one whose head takes longer than ReadHeaderTimeout.
func TestLoopClientTimeouts(t *testing.T) {
	t.Parallel()
	ls := startLoopServer(t, testBackend(""), ConnServerOptions{IdleTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond}, Options{})
	never := ls.dial(t) // sends nothing
	idle := ls.dial(t)
	if code, body := idle.get("/idle"); code != 200 || body != "/idle" {
		t.Fatalf("GET /idle: %d %q", code, body)
	}
	partial := ls.dial(t)
	if _, err := io.WriteString(partial.c, "GET /partial HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	for name, lc := range map[string]*loopClient{"never": never, "idle": idle, "partial": partial} {
		if !lc.closed() {
			t.Errorf("%s: the connection was not closed", name)
		}
	}
	waitFor(t, "the server is done with the 3 connections", func() bool { return ls.done.Load() == 3 && ls.s.looped.Load() == 0 })

	if served, handed := ls.s.Stats(); served == 0 || handed != 0 || ls.handed.Load() != 0 {
		t.Errorf("served %d, handed %d, want all served", served, handed)
	}
}

// TestLoopSharedBySlowAndFast: on a server with one loop, clients are served while another client
// reads nothing of a large response, and while it reads it slowly; it gets every byte. Clients that
// leave in the middle of such responses leave nothing behind on the loop.
func TestLoopSharedBySlowAndFast(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789abcdef", 4<<20/16) // 4 MiB
	ls := startLoopServer(t, testBackend(big), ConnServerOptions{}, Options{})
	slow := ls.dial(t)
	if _, err := io.WriteString(slow.c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(slow.br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /big: %v %v", resp, err)
	}
	fast := ls.dial(t)
	get := func(target string) {
		t.Helper()
		if code, body := fast.get(target); code != 200 || body != target {
			t.Fatalf("GET %s: %d %q", target, code, body)
		}
	}
	for i := range 20 {
		get(fmt.Sprintf("/before%d", i))
	}
	// Time for the backend to send all it can: the loop then has bytes it cannot write, and only
	// the slow client's readiness can make it go on.
	time.Sleep(200 * time.Millisecond)
	var got strings.Builder
	buf := make([]byte, 64<<10)
	for i := 0; ; i++ {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if i%16 == 0 {
			get(fmt.Sprintf("/during%d", i)) // the slow client reads nothing meanwhile
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading /big after %d bytes: %v", got.Len(), err)
		}
	}
	if got.String() != big {
		t.Fatalf("/big: %d bytes, not the backend's %d", got.Len(), len(big))
	}

	// Clients gone: before reading anything of the response, after some of it.
	for i := range 6 {
		gone := ls.dial(t)
		if _, err := io.WriteString(gone.c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if _, err := io.ReadFull(gone.br, buf); err != nil {
				t.Fatal(err)
			}
		}
		gone.c.Close()
		get(fmt.Sprintf("/after%d", i))
	}
	slow.c.Close()
	fast.c.Close()
	waitFor(t, "the loop let go of every connection", func() bool { return ls.s.looped.Load() == 0 && ls.done.Load() == 8 })
	if served, handed := ls.s.Stats(); handed != 0 || ls.handed.Load() != 0 || served < 30 {
		t.Errorf("served %d, handed %d, want all served", served, handed)
	}
}

// TestLoopMixedClients: many clients on one loop at once, each with its own mix of small and large
// responses read at their own pace, requests that leave the loop, and leaving mid-response.
func TestLoopMixedClients(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789abcdef", 256<<10/16)
	ls := startLoopServer(t, testBackend(big), ConnServerOptions{}, Options{})
	const clients = 40
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			if err := mixedClient(ls.addr, i, big); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "the server let go of every connection", func() bool { return ls.s.looped.Load() == 0 && ls.done.Load() == clients })
	if ls.handed.Load() != 0 {
		t.Errorf("%d connections handed over, want none", ls.handed.Load())
	}
}

// mixedClient is one client of TestLoopMixedClients; what it does follows from i.
func mixedClient(addr string, i int, big string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReaderSize(c, 4096)
	r := rand.New(rand.NewPCG(uint64(i), 1))
	for k := range 12 {
		var req, want string
		switch op := r.IntN(6); {
		case op == 0 && k > 6: // from here on, the connection is a goroutine's
			req, want = fmt.Sprintf("POST /p%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", k), fmt.Sprintf("/p%dhi", k)
		case op == 1 && k > 6:
			req, want = "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", "chunked"
		case op == 2 || op == 3:
			req, want = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", big
		default:
			req, want = fmt.Sprintf("GET /s%d HTTP/1.1\r\nHost: x\r\n\r\n", k), fmt.Sprintf("/s%d", k)
		}
		if _, err := io.WriteString(c, req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			return fmt.Errorf("request %d: %w", k, err)
		}
		if want == big && i%4 == 0 && k == 11 {
			// Gone in the middle of the body.
			_, err := io.CopyN(io.Discard, resp.Body, int64(r.IntN(len(big))))
			return err
		}
		var got strings.Builder
		buf := make([]byte, 1+r.IntN(32<<10))
		for {
			n, err := resp.Body.Read(buf)
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("request %d: reading the body after %d bytes: %w", k, got.Len(), err)
			}
			if r.IntN(8) == 0 {
				time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
			}
		}
		if resp.StatusCode != 200 || got.String() != want {
			return fmt.Errorf("request %d (%.30q): %d, %d bytes %.30q, want %d bytes %.30q", k, req, resp.StatusCode, got.Len(), got.String(), len(want), want)
		}
	}
	return nil
}

// inflight sums the requests in flight of the proxy's endpoints.
func (ls *loopServer) inflight() int64 {
	var n int64
	for _, ep := range ls.p.endpoints {
		n += ep.inflight.Load()
	}
	return n
}

// TestLoopInflightAccounting: whatever becomes of a request on the loop (answered, retried past a
// refusing endpoint, timed out, relayed by a goroutine, cut short by its client), the endpoints'
// counts of requests in flight, which least-inflight balancing reads, come back to 0.
func TestLoopInflightAccounting(t *testing.T) {
	t.Parallel()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // connections are refused
	big := strings.Repeat("x", 1<<20)
	ls := startLoopServer(t, testBackend(big), ConnServerOptions{}, Options{Balance: LeastInFlight, ReadTimeout: 300 * time.Millisecond}, deadAddr)
	for i := range 6 {
		lc := ls.dial(t)
		for k := range 4 {
			target := fmt.Sprintf("/ok%d-%d", i, k)
			if code, body := lc.get(target); code != 200 || body != target {
				t.Fatalf("GET %s: %d %q", target, code, body)
			}
		}
		lc.c.Close()
	}
	for _, tc := range []struct {
		target string
		code   int
		body   string
	}{{"/chunked", 200, "chunked"}, {"/mute", http.StatusGatewayTimeout, ""}, {"/big", 200, big}} {
		lc := ls.dial(t)
		if code, body := lc.get(tc.target); code != tc.code || tc.body != "" && body != tc.body {
			t.Errorf("GET %s: %d (%d bytes), want %d", tc.target, code, len(body), tc.code)
		}
		lc.c.Close()
	}
	for _, target := range []string{"/big", "/mute"} { // clients gone mid-body, and before any answer
		lc := ls.dial(t)
		if _, err := io.WriteString(lc.c, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if target == "/big" {
			if _, err := io.ReadFull(lc.br, make([]byte, 64<<10)); err != nil {
				t.Fatal(err)
			}
		}
		lc.c.Close()
	}
	waitFor(t, "no request in flight", func() bool { return ls.inflight() == 0 && ls.s.looped.Load() == 0 && ls.done.Load() == 11 })
}

// TestLoopReusesBackendConnections: the loop keeps its backend connections alive between requests:
// one client's requests, one by one or pipelined, take one backend connection, and clients served
// one after the other share it.
func TestLoopReusesBackendConnections(t *testing.T) {
	t.Parallel()
	ls := startLoopServer(t, testBackend(strings.Repeat("b", 100<<10)), ConnServerOptions{}, Options{})
	for c := range 3 {
		lc := ls.dial(t)
		for i := range 20 {
			target := fmt.Sprintf("/c%d-%d", c, i)
			if code, body := lc.get(target); code != 200 || body != target {
				t.Fatalf("GET %s: %d %q", target, code, body)
			}
		}
		var reqs strings.Builder
		for i := range 20 {
			fmt.Fprintf(&reqs, "GET /big?c=%d&i=%d HTTP/1.1\r\nHost: x\r\n\r\n", c, i)
		}
		if _, err := io.WriteString(lc.c, reqs.String()); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			resp, err := http.ReadResponse(lc.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("pipelined %d: %v", i, err)
			}
			if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != 100<<10 {
				t.Fatalf("pipelined %d: %d bytes, %v", i, n, err)
			}
		}
		lc.c.Close()
	}
	if n := ls.dialed.Load(); n != 1 {
		t.Errorf("the backend accepted %d connections for 120 requests one after the other, want 1", n)
	}
}

// TestLoopBackendStallWhileClientSends: a backend that stops in the middle of a body is given up on
// after the read timeout, also while the client sends its next request meanwhile, byte by byte.
func TestLoopBackendStallWhileClientSends(t *testing.T) {
	t.Parallel()
	ls := startLoopServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, "0123456789")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	}, ConnServerOptions{}, Options{ReadTimeout: 200 * time.Millisecond})
	lc := ls.dial(t)
	if _, err := io.WriteString(lc.c, "GET /stall HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(lc.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		ended <- err
	}()
	// The next request, a byte every 50 ms: 20 times the read timeout in all, and its head never
	// ends.
	next := "GET /next HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 200)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(next); i++ {
		select {
		case err := <-ended:
			if err == nil {
				t.Fatal("the body of a stalled response ended as if whole")
			}
			return
		case <-tick.C:
		}
		if _, err := lc.c.Write([]byte{next[i]}); err != nil {
			return // the proxy gave up on the exchange and closed the connection
		}
	}
	t.Fatalf("the response of a backend that stalled was still open after %d bytes of the next request, 50 ms apart (read timeout 200 ms)", len(next))
}

// TestLoopDropsIdleConnectionsOfRemovedEndpoints: when an endpoint leaves the route table, the
// proxy closes its idle connections to it, as the goroutine lane's pool does on Swap, rather than
// keeping them open until they are too old to reuse (30 s).
func TestLoopDropsIdleConnectionsOfRemovedEndpoints(t *testing.T) {
	t.Parallel()
	ls := startLoopServer(t, testBackend(""), ConnServerOptions{}, Options{})
	lc := ls.dial(t)
	for _, target := range []string{"/a", "/b"} {
		if code, body := lc.get(target); code != 200 || body != target {
			t.Fatalf("GET %s: %d %q", target, code, body)
		}
	}
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	osrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "other "+r.URL.Path) })}
	go osrv.Serve(other)
	t.Cleanup(func() { osrv.Close() })
	ls.cb.Set(fx.Slice("svc", "svc-1", fx.EP{Addr: other.Addr().String(), Node: "node1"}))
	ls.swap(t)
	if code, body := lc.get("/c"); code != 200 || body != "other /c" {
		t.Fatalf("GET /c after the endpoint changed: %d %q", code, body)
	}
	if ls.dialed.Load() != 1 {
		t.Fatalf("the old endpoint accepted %d connections, want 1", ls.dialed.Load())
	}
	deadline := time.Now().Add(10 * time.Second)
	for ls.closed.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection to the removed endpoint is still open 10 s after the Swap")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLoopRandomSplits: requests of many sizes, pipelined and written in pieces cut anywhere, some
// heads just under the loop's 8 KiB limit, are answered in order while the client reads
// concurrently, all on the loop.
func TestLoopRandomSplits(t *testing.T) {
	t.Parallel()
	ls := startLoopServer(t, testBackend(strings.Repeat("r", 50<<10)), ConnServerOptions{}, Options{})
	for seed := range uint64(4) {
		r := rand.New(rand.NewPCG(seed, 2))
		lc := ls.dial(t)
		var all strings.Builder
		var want []string
		for i := range 150 {
			pad := r.IntN(300)
			if i%37 == 36 {
				pad = 8<<10 - 100 - r.IntN(200) // heads just under the loop's 8 KiB (beyond, net/http's)
			}
			target := fmt.Sprintf("/s%d/r%d", seed, i)
			if i%11 == 10 {
				target = "/big"
			}
			fmt.Fprintf(&all, "GET %s HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", target, strings.Repeat("p", pad))
			want = append(want, target)
		}
		reqs := all.String()
		go func() {
			for len(reqs) > 0 {
				n := min(len(reqs), 1+r.IntN(2000))
				if _, err := io.WriteString(lc.c, reqs[:n]); err != nil {
					return
				}
				reqs = reqs[n:]
				if r.IntN(4) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		for i, target := range want {
			resp, err := http.ReadResponse(lc.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("seed %d, response %d: %v", seed, i, err)
			}
			body, err := io.ReadAll(resp.Body)
			wantBody := target
			if target == "/big" {
				wantBody = strings.Repeat("r", 50<<10)
			}
			if err != nil || resp.StatusCode != 200 || string(body) != wantBody {
				t.Fatalf("seed %d, response %d (%s): %d, %d bytes %.40q, %v", seed, i, target, resp.StatusCode, len(body), body, err)
			}
		}
		lc.c.Close()
	}
	if n := ls.handed.Load(); n != 0 {
		t.Errorf("%d connections handed over, want none", n)
	}
}
