package ingress

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests of the event loops (proxy/loop.go) through the HTTP listener, which serves plain HTTP/1.x
// connections on them unless DisableEventLoop: what the lanes tests, which compare single exchanges
// byte for byte, do not reach: slow clients, many clients at once, backends that close, hand-offs in
// the middle of a connection, shutdown, failures and the connection gauge.

// loopBody is the body of loopBackend's /big: random bytes, so that a byte relayed twice, lost or
// out of place changes the hash.
var loopBody = sync.OnceValue(func() []byte {
	b := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(b)
	return b
})

// loopBackend serves /big (loopBody, Content-Length framed, or its first n bytes with ?n=),
// /chunked (a chunked body without a Content-Type, which the loop leaves to a goroutine: the
// goroutine lane sniffs one from its first read) and, for any other path, the echo of the request (method, path, query
// and body) with a Content-Length.
func loopBackend(t *testing.T) *backend {
	return startBackend(t, "loop", false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			body := loopBody()
			if n, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil {
				body = body[:n]
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		case "/chunked":
			w.Header()["Content-Type"] = nil // no sniffing by the backend either
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		default:
			body, _ := io.ReadAll(r.Body)
			msg := fmt.Sprintf("%s %s ?%s [%s]", r.Method, r.URL.Path, r.URL.RawQuery, body)
			w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
			io.WriteString(w, msg)
		}
	})
}

// echoed is what loopBackend answers to a request without a body.
func echoed(method, target string) string {
	path, query, _ := strings.Cut(target, "?")
	return fmt.Sprintf("%s %s ?%s []", method, path, query)
}

// get sends a GET of target on rc and checks the echo.
func (rc *rawConn) get(target string) {
	rc.t.Helper()
	rc.send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.expect("GET", 200, echoed("GET", target))
}

// expect reads a response and checks its status and body.
func (rc *rawConn) expect(method string, status int, body string) {
	rc.t.Helper()
	resp, got := rc.read(method)
	if resp.StatusCode != status || got != body {
		rc.t.Fatalf("got %d %q, want %d %q", resp.StatusCode, got, status, body)
	}
}

// exchange sends req (when not empty) on c and reads a response to method from br, for goroutines
// other than the test's, which must not call t.Fatal.
func exchange(c net.Conn, br *bufio.Reader, method, req string) (int, string, error) {
	if req != "" {
		if _, err := io.WriteString(c, req); err != nil {
			return 0, "", err
		}
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return 0, "", err
	}
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestLoopBackpressure: a client that reads a large response slowly gets it whole, and the loop it
// shares with other clients serves them meanwhile.
func TestLoopBackpressure(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(simple("", "loop", be.addr))

	// A small receive buffer, set before connecting so that the window stays small: the loop
	// finds the client's socket full early and often.
	slow, resp := getBigSlowly(t, strings.TrimPrefix(h.httpURL, "http://"), nil)

	// The loops take connections in turn: of more fast clients than loops, some share the slow
	// client's. They are served while it reads nothing, and while it reads slowly.
	fast := make([]*rawConn, 2*runtime.GOMAXPROCS(0)+1)
	for i := range fast {
		fast[i] = h.dial(t)
		for k := range 5 {
			fast[i].get(fmt.Sprintf("/fast%d?k=%d", i, k))
		}
	}
	var got int64
	var sum []byte
	meanwhile(t, fast, func(i, k int) (string, string) {
		target := fmt.Sprintf("/during%d?k=%d", i, k)
		return target, echoed("GET", target)
	}, func() {
		got, sum = readSlowly(t, resp.Body, 1<<20, 300*time.Millisecond) // the backend has sent all it can by then: only the client's readiness can make the loop go on
	})
	checkLoopBody(t, got, sum)
	slow.get("/after?slow") // the connection goes on
}

// meanwhile has each of the fast clients send GETs, one after the other, until during returns;
// request gives client i's k-th target and the body its 200 must have. A wrong answer ends that
// client's turn and fails the test. It returns how many answers each client got.
func meanwhile(t *testing.T, fast []*rawConn, request func(i, k int) (target, want string), during func()) []int {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, len(fast))
	served := make([]int, len(fast))
	for i, rc := range fast {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-done:
					return
				default:
				}
				target, want := request(i, k)
				code, body, err := exchange(rc.c, rc.br, "GET", "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
				if err != nil || code != 200 || body != want {
					errs <- fmt.Errorf("%s: %d %.60q %v, want %.60q", target, code, body, err, want)
					return
				}
				served[i]++
			}
		})
	}
	during()
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a fast client: %v", err)
	}
	return served
}

// answered reads the answer to a request sent on c earlier and checks that it is a 200 with want.
func answered(c net.Conn, br *bufio.Reader, method, target, want string) error {
	code, body, err := exchange(c, br, method, "")
	if err != nil || code != 200 || body != want {
		return fmt.Errorf("%s %s: %d %.80q %v, want %.80q", method, target, code, body, err, want)
	}
	return nil
}

// writeApart writes req to c in pieces that arrive apart most of the time: cut at a and b, and
// between the CR and LF that end it.
func writeApart(c net.Conn, req string, a, b int) error {
	for _, cut := range [][2]int{{0, a}, {a, b}, {b, len(req) - 1}, {len(req) - 1, len(req)}} {
		if _, err := io.WriteString(c, req[cut[0]:cut[1]]); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// loopClient is a client of TestLoopManyClients: keep-alive requests, pipelined and split, then a
// response it reads whole; it returns what went wrong.
func loopClient(addr string, i int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	check := func(method, target, want string) error { return answered(c, br, method, target, want) }
	for round := range 3 {
		var pipelined strings.Builder
		var targets []string
		for k := range 3 {
			targets = append(targets, fmt.Sprintf("/c%d/r%d/p%d?k=%d", i, round, k, k))
			fmt.Fprintf(&pipelined, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", targets[k])
		}
		if _, err := io.WriteString(c, pipelined.String()); err != nil {
			return err
		}
		for _, target := range targets {
			if err := check("GET", target, echoed("GET", target)); err != nil {
				return fmt.Errorf("pipelined: %w", err)
			}
		}
		// A head in pieces, cut in the request line, inside a field and between CR and LF.
		target := fmt.Sprintf("/c%d/r%d/split?q=%d", i, round, round)
		req := "GET " + target + " HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 100+i) + "\r\n\r\n"
		if err := writeApart(c, req, 6, 30); err != nil {
			return err
		}
		if err := check("GET", target, echoed("GET", target)); err != nil {
			return fmt.Errorf("split: %w", err)
		}
	}
	n := 20000 + 1000*i
	if _, err := fmt.Fprintf(c, "HEAD /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\nGET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n, n); err != nil {
		return err
	}
	if err := check("HEAD", "/big", ""); err != nil {
		return err
	}
	return check("GET", "/big", string(loopBody()[:n]))
}

// TestLoopManyClients: many keep-alive connections at once, with pipelined and split requests, and
// clients that go away in the middle of a response; later clients are served, and the connections
// are all let go of (the gauge of open connections comes back to 0).
func TestLoopManyClients(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(simple("", "loop", be.addr))
	addr := strings.TrimPrefix(h.httpURL, "http://")
	const clients = 200
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			if err := loopClient(addr, i); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if served, handed := h.fastStats(); served < clients*14 || handed != 0 {
		t.Errorf("the fast path served %d requests and handed %d connections to net/http, want %d and 0", served, handed, clients*14)
	}

	// Clients that go away: before the response, after its head, within its body.
	for i := range 30 {
		h.dial(t).goAway(i, int64(1000*i))
	}
	// Later clients are served, a whole /big included.
	for i := range 5 {
		if err := loopClient(addr, clients+i); err != nil {
			t.Fatalf("after the disconnects: %v", err)
		}
	}
	rc := h.dial(t)
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := rc.read("GET"); resp.StatusCode != 200 || body != string(loopBody()) {
		t.Fatalf("GET /big after the disconnects: %d, %d bytes", resp.StatusCode, len(body))
	}
	rc.c.Close()
	h.waitActive(t, 0)
}

// waitActive waits for the gauge of open connections of the HTTP listener to read n.
func (h *harness) waitActive(t *testing.T, n float64) {
	t.Helper()
	const name = "baregate_ingress_active_connections"
	deadline := time.Now().Add(15 * time.Second)
	for h.metric(name, "listener", "http") != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s{listener=\"http\"} = %v, want %v", name, h.metric(name, "listener", "http"), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closingBackend answers each request with its path, Content-Length framed and without saying
// anything of the connection, and closes a connection that has not sent its next request within
// idle: a backend with a short keep-alive timeout, whose closes race with the proxy's reuse. With
// idle 0 it closes each connection when the second request comes, without answering it: the close
// lost that race.
func closingBackend(t *testing.T, idle time.Duration) string {
	return serveLoopback(t, fmt.Sprintf("127.0.0.%d", 2+nextLoopback.Add(1)%250), func(c net.Conn) {
		br := bufio.NewReader(c)
		for first := true; ; first = false {
			if !first { // a new connection waits for its first request
				c.SetReadDeadline(time.Now().Add(idle))
			}
			req, err := http.ReadRequest(br)
			if err != nil || !first && idle == 0 {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.RequestURI), req.RequestURI)
		}
	})
}

// TestLoopBackendClosesIdle: requests after the backend closed its idle keep-alive connections are
// answered, never with 502.
func TestLoopBackendClosesIdle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hosts := []string{"a.example.com", "b.example.com", "c.example.com"}
	h.apply(merge(simple(hosts[0], "quick", closingBackend(t, time.Millisecond)), simple(hosts[1], "idle", closingBackend(t, 20*time.Millisecond)),
		simple(hosts[2], "lost", closingBackend(t, 0))))
	rcs := []*rawConn{h.dial(t), h.dial(t), h.dial(t), h.dial(t)}
	var wg sync.WaitGroup
	for i := range rcs {
		wg.Go(func() {
			rc := rcs[i]
			for k := range 40 {
				host := hosts[k%len(hosts)]
				target := fmt.Sprintf("/c%d/%d", i, k)
				code, body, err := exchange(rc.c, rc.br, "GET", "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
				if err != nil || code != 200 || body != target {
					t.Errorf("client %d, request %d to %s: %d %q %v, want 200 %q", i, k, host, code, body, err, target)
					return
				}
				// Around the backend's idle timeout: some requests find the connection open, some
				// closed, some closing.
				time.Sleep(time.Duration(k%5) * 10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if _, handed := h.fastStats(); handed != 0 {
		t.Errorf("%d connections handed to net/http, want none", handed)
	}
}

// getBigSlowly dials addr (over TLS with conf, unless nil) with a small receive window, so that a
// proxy writing to it finds its socket full early and often, and asks for loopBackend's /big. It
// returns the connection and the response, whose body the caller reads.
func getBigSlowly(t *testing.T, addr string, conf *tls.Config) (*rawConn, *http.Response) {
	t.Helper()
	rc := &rawConn{t: t, c: dialSmallWindow(t, addr, conf)}
	rc.br = bufio.NewReaderSize(rc.c, 4096)
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(loopBody())) {
		t.Fatalf("GET /big: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	return rc, resp
}

// checkLoopBody checks that a reader of /big got got bytes whose hash is sum: all of loopBody.
func checkLoopBody(t *testing.T, got int64, sum []byte) {
	t.Helper()
	if want := sha256.Sum256(loopBody()); got != int64(len(loopBody())) || !bytes.Equal(sum, want[:]) {
		t.Fatalf("the slow client got %d bytes (hash %x), want %d (hash %x)", got, sum, len(loopBody()), want)
	}
}

// goAway asks rc for /big and closes the connection: at once when i%3 is 0, after the response's
// head when it is 1, and after n bytes of its body when it is 2.
func (rc *rawConn) goAway(i int, n int64) {
	rc.t.Helper()
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	if i%3 > 0 {
		resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
		if err != nil || resp.StatusCode != 200 {
			rc.t.Fatalf("GET /big: %v %v", resp, err)
		}
		if i%3 == 2 {
			if _, err := io.CopyN(io.Discard, resp.Body, n); err != nil {
				rc.t.Fatal(err)
			}
		}
	}
	rc.c.Close()
}

// step is a request of the hand-off tests and the body of its answer, which must be a 200.
type step struct{ method, req, want string }

func getStep(target string) step {
	return step{"GET", "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n", echoed("GET", target)}
}

// getSteps returns n GETs of loopBackend's echo, of paths named after prefix.
func getSteps(prefix string, n int) []step {
	var out []step
	for i := range n {
		out = append(out, getStep(fmt.Sprintf("/%s%d?i=%d", prefix, i, i)))
	}
	return out
}

func postStep(target, body string) step {
	return step{"POST", fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", target, len(body), body),
		fmt.Sprintf("POST %s ? [%s]", target, body)}
}

// chunkedStep asks loopBackend for its chunked response, which takes the connection off the loop.
func chunkedStep() step {
	return step{"GET", "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", "part0;part1;part2;"}
}

func bigStep() step {
	return step{"GET", "GET /big?n=100000 HTTP/1.1\r\nHost: x\r\n\r\n", string(loopBody()[:100000])}
}

// play sends steps on rc, all at once when pipelined and otherwise each after the answer to the one
// before, and checks the answers in order; check, when not nil, looks further at each response.
func (rc *rawConn) play(label string, steps []step, pipelined bool, check func(i int, s step, resp *http.Response)) {
	rc.t.Helper()
	if pipelined {
		var all strings.Builder
		for _, s := range steps {
			all.WriteString(s.req)
		}
		rc.send(all.String())
	}
	for i, s := range steps {
		if !pipelined {
			rc.send(s.req)
		}
		resp, body := rc.read(s.method)
		if resp.StatusCode != 200 || body != s.want {
			rc.t.Fatalf("%s, step %d (%.40q): %d %.60q, want %.60q", label, i, s.req, resp.StatusCode, body, s.want)
		}
		if check != nil {
			check(i, s, resp)
		}
	}
}

// TestLoopHandOffs: keep-alive connections whose requests take the loop's direct lane, then a
// goroutine's lane (a request with a body, a response without a Content-Length), then the direct
// lane's requests again: every answer comes, in order, whether the requests come one by one or
// pipelined.
func TestLoopHandOffs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(simple("", "loop", be.addr))
	chunked, big := chunkedStep(), bigStep()
	head := step{"HEAD", "HEAD /big?n=100000 HTTP/1.1\r\nHost: x\r\n\r\n", ""}
	del := step{"DELETE", "DELETE /d HTTP/1.1\r\nHost: x\r\n\r\n", "DELETE /d ? []"}
	escaped := step{"GET", "GET /a%20b HTTP/1.1\r\nHost: x\r\n\r\n", "GET /a b ? []"}
	http10 := step{"GET", "GET /h10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET /h10 ? []"}
	// A connection leaves the loop for good with its first request or response that is not the
	// direct lane's: each sequence starts on the loop.
	for _, tc := range []struct {
		name  string
		steps [][]step
	}{
		{"a POST", [][]step{getSteps("a", 3), {postStep("/p", "hello")}, getSteps("b", 3), {big}}},
		{"a chunked response", [][]step{getSteps("a", 3), {chunked}, getSteps("b", 2), {big, chunked, head}}},
		{"chunked first", [][]step{{chunked, chunked}, getSteps("a", 2)}},
		{"the direct lane's only", [][]step{getSteps("a", 2), {head, big, del}, getSteps("b", 2), {http10, big}}},
		{"a POST of 300 KiB", [][]step{getSteps("a", 1), {postStep("/r", strings.Repeat("r", 300<<10))}, getSteps("b", 1)}},
		{"an escaped path", [][]step{getSteps("a", 1), {escaped}, getSteps("b", 1)}},
	} {
		steps := slices.Concat(tc.steps...)
		for _, pipelined := range []bool{false, true} {
			h.dial(t).play(fmt.Sprintf("%s, pipelined %v", tc.name, pipelined), steps, pipelined, func(i int, s step, resp *http.Response) {
				if s.method == "HEAD" && resp.ContentLength != 100000 {
					t.Fatalf("%s, pipelined %v, step %d: HEAD announced %d bytes", tc.name, pipelined, i, resp.ContentLength)
				}
			})
		}
	}
	if _, handed := h.fastStats(); handed != 0 {
		t.Errorf("%d connections handed to net/http, want none", handed)
	}
}

// holdingBackend answers "done <path>", and holds a request for /slow until release is closed, after
// saying on arrived that it came: a request in flight for the shutdown tests.
func holdingBackend(t *testing.T) (be *backend, arrived <-chan struct{}, release chan struct{}) {
	came, release := make(chan struct{}), make(chan struct{})
	be = startBackend(t, "slow", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			came <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	})
	return be, came, release
}

// TestLoopShutdown: stopping the Ingress closes the loops' idle connections at once, lets a request
// in flight finish, then closes its connection too.
func TestLoopShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.HTTPSAddress = "" })
	stop := h.stop
	be, arrived, release := holdingBackend(t)
	h.apply(simple("", "slow", be.addr))
	var idle []*rawConn
	for i := range 6 {
		rc := h.dial(t)
		rc.send(fmt.Sprintf("GET /idle%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		rc.expect("GET", 200, fmt.Sprintf("done /idle%d", i))
		idle = append(idle, rc)
	}
	busy := h.dial(t)
	busy.send("GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	busy.expect("GET", 200, "done /first")
	busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	if served, _ := h.fastStats(); served != 8 {
		t.Fatalf("the fast path served %d requests, want 8", served)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The idle connections are closed while the backend still holds the request in flight.
	for i, rc := range idle {
		if !rc.closed() {
			t.Errorf("idle connection %d stayed open during the shutdown", i)
		}
	}
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	busy.expect("GET", 200, "done /slow")
	if !busy.closed() {
		t.Error("the connection of the request in flight stayed open after its response")
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: %v", err)
	}
	h.waitActive(t, 0)
}

// TestLoopErrors: a backend that refuses connections is answered with 502 and one that does not
// answer in time with 504, each on a connection that serves the next request; an endpoint that
// refuses among good ones costs no request.
func TestLoopErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	be := loopBackend(t)
	mute := serveLoopback(t, fmt.Sprintf("127.0.0.%d", 2+nextLoopback.Add(1)%250), func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c) // reads the requests, answers none
	})
	h.apply(merge(
		simple("ok.example.com", "ok", be.addr),
		simple("dead.example.com", "dead", deadAddr(t)),
		simple("mute.example.com", "mute", mute),
		simple("half.example.com", "half", deadAddr(t), be.addr),
	))
	req := func(host, target string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
	}
	for _, tc := range []struct {
		host string
		code int
	}{
		{"dead.example.com", http.StatusBadGateway},
		{"mute.example.com", http.StatusGatewayTimeout},
	} {
		for _, first := range []bool{true, false} {
			rc := h.dial(t)
			if !first { // the failure on a connection the loop has served before
				rc.send(req("ok.example.com", "/before"))
				rc.expect("GET", 200, echoed("GET", "/before"))
			}
			rc.send(req(tc.host, "/fail"))
			if resp, body := rc.read("GET"); resp.StatusCode != tc.code {
				t.Errorf("%s: %d %q, want %d", tc.host, resp.StatusCode, body, tc.code)
			}
			for i := range 2 {
				target := fmt.Sprintf("/after%d", i)
				rc.send(req("ok.example.com", target))
				rc.expect("GET", 200, echoed("GET", target))
			}
			// Pipelined: the failure, then a request the connection must still answer.
			rc.send(req(tc.host, "/fail") + req("ok.example.com", "/pipelined"))
			if resp, _ := rc.read("GET"); resp.StatusCode != tc.code {
				t.Errorf("%s pipelined: %d, want %d", tc.host, resp.StatusCode, tc.code)
			}
			rc.expect("GET", 200, echoed("GET", "/pipelined"))
		}
	}
	// Passive health: the refusing endpoint is retried past, then skipped.
	for c := range 2 {
		rc := h.dial(t)
		for i := range 10 {
			target := fmt.Sprintf("/half%d/%d", c, i)
			rc.send(req("half.example.com", target))
			rc.expect("GET", 200, echoed("GET", target))
		}
	}
}

// TestLoopActiveConnections: the gauge of open connections counts the loops' connections, and those
// they gave to goroutines or to net/http, until each closes.
func TestLoopActiveConnections(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(simple("", "loop", be.addr))
	var rcs []*rawConn
	for i := range 10 {
		rc := h.dial(t)
		rc.get(fmt.Sprintf("/c%d", i))
		rcs = append(rcs, rc)
	}
	h.waitActive(t, 10)
	// One goes to a goroutine for a request with a body, one for a chunked response without a
	// Content-Type, one to net/http for an Expect.
	rcs[0].send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	rcs[0].expect("POST", 200, "POST /p ? [hi]")
	rcs[1].send("GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
	rcs[1].expect("GET", 200, "part0;part1;part2;")
	rcs[2].send("POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
	rcs[2].expect("POST", 100, "")
	rcs[2].expect("POST", 200, "POST /e ? [hi]")
	if _, handed := h.fastStats(); handed != 1 {
		t.Fatalf("%d connections handed to net/http, want 1", handed)
	}
	h.waitActive(t, 10)
	for i, rc := range rcs {
		rc.c.Close()
		h.waitActive(t, float64(len(rcs)-1-i))
	}
	// Connections closed by the server: HTTP/1.0, Connection: close, and a client gone in the
	// middle of a response.
	for _, req := range []string{"GET /h10 HTTP/1.0\r\n\r\n", "GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"} {
		rc := h.dial(t)
		rc.send(req)
		rc.read("GET")
		if !rc.closed() {
			t.Errorf("%q: the connection stayed open", req)
		}
	}
	rc := h.dial(t)
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.ReadFull(rc.br, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	rc.c.Close()
	h.waitActive(t, 0)
}

// goroutinesIn counts the goroutines whose stack has fn in it.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), fn+"(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestLoopServesWithoutGoroutines checks what the other tests of this file rely on: the HTTP
// listener serves plain connections on its event loops, with no goroutine per connection until one
// leaves the loop, and with a goroutine each under DisableEventLoop. Not parallel: it counts the
// process's goroutines (those of earlier tests can only have ended meanwhile).
func TestLoopServesWithoutGoroutines(t *testing.T) {
	const perConn = "proxy.(*ConnServer).run"
	be := loopBackend(t)
	for _, disabled := range []bool{false, true} {
		h := newHarness(t, func(c *Config) { c.DisableEventLoop = disabled })
		h.apply(simple("", "loop", be.addr))
		before := goroutinesIn(perConn)
		var rcs []*rawConn
		for i := range 10 {
			rc := h.dial(t)
			rc.get(fmt.Sprintf("/c%d", i))
			rcs = append(rcs, rc)
		}
		if disabled {
			if n := goroutinesIn(perConn); n < len(rcs) {
				t.Errorf("without event loops: %d goroutines serve %d connections", n, len(rcs))
			}
			continue
		}
		if n := goroutinesIn(perConn) - before; n > 0 {
			t.Errorf("with event loops: %d goroutines serve the connections, want none", n)
		}
		if goroutinesIn("proxy.(*evloop).run") == 0 {
			t.Error("no event loop runs")
		}
		// A request with a body takes its connection off the loop.
		before = goroutinesIn(perConn)
		rcs[0].send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
		rcs[0].expect("POST", 200, "POST /p ? [hi]")
		if n := goroutinesIn(perConn) - before; n < 1 {
			t.Errorf("after a POST: %d goroutines serve the connections, want 1", n)
		}
	}
}

// TestLoopHalfClosed: a client that closes its sending side after its requests gets their answers,
// then the end of the connection; one that leaves while its request is with the backend costs the
// others nothing.
func TestLoopHalfClosed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	be := startBackend(t, "half", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, echoed(r.Method, r.URL.RequestURI()))
	})
	h.apply(simple("", "half", be.addr))
	for _, n := range []int{1, 3} {
		rc := h.dial(t)
		var reqs strings.Builder
		for i := range n {
			fmt.Fprintf(&reqs, "GET /h%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		}
		rc.send(reqs.String())
		if err := rc.c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			rc.expect("GET", 200, echoed("GET", fmt.Sprintf("/h%d", i)))
		}
		if !rc.closed() {
			t.Errorf("%d requests, then the client's FIN: the connection stayed open", n)
		}
	}
	gone := h.dial(t)
	gone.get("/first")
	gone.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	gone.c.Close()
	rc := h.dial(t)
	rc.get("/meanwhile") // the loop is not waiting for the slow backend
	close(release)
	for i := range 3 {
		rc.get(fmt.Sprintf("/after%d", i))
	}
	rc.c.Close()
	h.waitActive(t, 0)
}

// TestLoopPipelinedBurst: hundreds of requests in one write, more than the loop reads at once, are
// answered in order, also when one in the middle takes the connection off the loop with the rest.
func TestLoopPipelinedBurst(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(simple("", "loop", be.addr))
	const n = 500
	for _, post := range []int{-1, 3, 250} { // the request that takes the connection off the loop
		rc := h.dial(t)
		var reqs strings.Builder
		for i := range n {
			if i == post {
				fmt.Fprintf(&reqs, "POST /burst%d?i=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", i, i)
				continue
			}
			fmt.Fprintf(&reqs, "GET /burst%d?i=%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", i, i, strings.Repeat("p", i%50))
		}
		go io.WriteString(rc.c, reqs.String()) // ~60 KiB: the answers may fill the socket buffers first
		for i := range n {
			if i == post {
				rc.expect("POST", 200, fmt.Sprintf("POST /burst%d ?i=%d [hello]", i, i))
				continue
			}
			rc.expect("GET", 200, echoed("GET", fmt.Sprintf("/burst%d?i=%d", i, i)))
		}
	}
	if _, handed := h.fastStats(); handed != 0 {
		t.Errorf("%d connections handed to net/http, want none", handed)
	}
}

// TestLoopCloseWithUnreadRequests: a connection the loop closes after an answer while requests the
// client sent after it wait unread in the loop's buffer (and beyond it, ~60 KiB) still gives the
// client that answer and a clean end, not a reset.
func TestLoopCloseWithUnreadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(simple("", "loop", be.addr))
	for _, first := range []string{
		"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /a HTTP/1.0\r\n\r\n",
	} {
		rc := h.dial(t)
		rc.send(first + "GET /b HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("GET /c HTTP/1.1\r\nHost: x\r\n\r\n", 2000))
		resp, body := rc.read("GET")
		if resp.StatusCode != 200 || body != echoed("GET", "/a") || !resp.Close {
			t.Errorf("%q: %d %q close=%v", first, resp.StatusCode, body, resp.Close)
		}
		if !rc.closed() {
			t.Errorf("%q: the connection did not end cleanly", first)
		}
	}
}

// TestLoopRecordsRequests: the requests the loop serves, and the one it fails, are counted in the
// request and byte metrics like the others.
func TestLoopRecordsRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	be := loopBackend(t)
	h.apply(merge(simple("", "loop", be.addr), simple("dead.example.com", "dead", deadAddr(t))))
	rc := h.dial(t)
	for i := range 10 {
		rc.send(fmt.Sprintf("GET /big?n=1000&i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		rc.expect("GET", 200, string(loopBody()[:1000]))
	}
	rc.send("GET /fail HTTP/1.1\r\nHost: dead.example.com\r\n\r\n")
	if resp, _ := rc.read("GET"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("the dead backend: %d, want 502", resp.StatusCode)
	}
	gone := h.dial(t) // counted too, with what it was sent
	gone.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.ReadFull(gone.br, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	gone.c.Close()
	const requests = "baregate_ingress_requests_total"
	deadline := time.Now().Add(15 * time.Second)
	for h.metric(requests, "code", "200") != 11 {
		if time.Now().After(deadline) {
			t.Fatalf("%s{code=\"200\"} = %v, want 11", requests, h.metric(requests, "code", "200"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := h.metric(requests, "code", "502"); n != 1 {
		t.Errorf("%s{code=\"502\"} = %v, want 1", requests, n)
	}
	const bytesOut = "baregate_ingress_response_bytes_total"
	if n := h.metric(bytesOut, "service", "default/loop"); n < 11000 || n > float64(10000+len(loopBody())) {
		t.Errorf("%s{service=\"default/loop\"} = %v, want 10000 and what went of the 8 MiB", bytesOut, n)
	}
}

// readSlowly reads body to its end in 4 KiB reads with a pause after every `every` bytes, and returns
// how many bytes came and their SHA-256.
func readSlowly(t *testing.T, body io.Reader, every int64, pause time.Duration) (int64, []byte) {
	t.Helper()
	hash := sha256.New()
	buf := make([]byte, 4096)
	var got int64
	for {
		n, err := body.Read(buf)
		hash.Write(buf[:n])
		got += int64(n)
		if got%every < int64(n) {
			time.Sleep(pause)
		}
		if err == io.EOF {
			return got, hash.Sum(nil)
		}
		if err != nil {
			t.Fatalf("reading the body after %d bytes: %v", got, err)
		}
	}
}
