package ingress

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hugePiece is what sendTimeoutBackend's responses repeat, hugePieces times: 64 MiB, more than the
// sockets between it and a client that stopped reading hold.
var hugePiece = bytes.Repeat([]byte("0123456789abcdef"), 4096)

const hugePieces = 1024

// sendTimeoutBackend serves /huge (Content-Length framed), /chunked-huge (the same, chunked; with
// ?untyped without a Content-Type, which the event loop leaves to a goroutine), /ws (a 101, then
// the same bytes) and /quiet (two parts, ?for=a duration apart). Each response reports on the channel when a write to the proxy
// fails: the proxy closed the backend connection the response held.
func sendTimeoutBackend(t *testing.T) (*backend, <-chan error) {
	failed := make(chan error, 16)
	piece, pieces := hugePiece, hugePieces
	be := startBackend(t, "slowclient", false, func(w http.ResponseWriter, r *http.Request) {
		var out io.Writer = w
		switch r.URL.Path {
		case "/huge":
			w.Header().Set("Content-Length", strconv.Itoa(pieces*len(piece)))
		case "/chunked-huge":
			if r.URL.Query().Has("untyped") {
				w.Header()["Content-Type"] = nil
			}
		case "/ws":
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "websocket")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				failed <- err
				return
			}
			defer c.Close()
			_ = brw.Flush()
			out = c
		case "/quiet":
			d, _ := time.ParseDuration(r.URL.Query().Get("for"))
			io.WriteString(w, "before;")
			w.(http.Flusher).Flush()
			time.Sleep(d)
			io.WriteString(w, "after")
			return
		default:
			http.NotFound(w, r)
			return
		}
		flusher, _ := out.(http.Flusher)
		for range pieces {
			if _, err := out.Write(piece); err != nil {
				failed <- err
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	})
	return be, failed
}

// dialSmallWindow connects to addr with a 4 KiB receive buffer, so that a proxy writing to the
// connection finds it full as soon as the client stops reading.
func dialSmallWindow(t *testing.T, addr string, conf *tls.Config) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err == nil {
			err = serr
		}
		return err
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if conf != nil {
		c = tls.Client(c, conf)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// TestClientSendTimeout: a client that stops reading a response is disconnected after the client
// send timeout, in every lane that can serve it, and the backend connection the response held is
// closed; a client that reads slowly but steadily gets the whole response although it takes many
// times the timeout, because the timeout bounds each wait for the client, as nginx's send_timeout.
func TestClientSendTimeout(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	lanes := []struct {
		name  string
		cfg   func(*Config)
		tls   bool
		path  string // of the response the client stops reading
		total int64  // its length, -1 for a tunnel
	}{
		{name: "event loop", path: "/huge", total: 64 << 20},
		{name: "event loop over TLS", tls: true, path: "/huge", total: 64 << 20},
		{name: "goroutine direct lane", cfg: func(c *Config) { c.DisableEventLoop = true }, path: "/huge", total: 64 << 20},
		{name: "event loop, chunked", path: "/chunked-huge", total: 64 << 20},
		{name: "goroutine handler lane, chunked", cfg: func(c *Config) { c.DisableEventLoop = true }, path: "/chunked-huge", total: 64 << 20},
		{name: "handed over by the event loop, chunked", path: "/chunked-huge?untyped", total: 64 << 20},
		{name: "net/http", cfg: func(c *Config) { c.DisableFastPath = true }, path: "/huge", total: 64 << 20},
		{name: "net/http over TLS", cfg: func(c *Config) { c.DisableFastPath = true }, tls: true, path: "/huge", total: 64 << 20},
		{name: "upgraded connection", path: "/ws", total: -1},
	}
	for _, lane := range lanes {
		t.Run(lane.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) {
				c.ClientSendTimeout = timeout
				if lane.cfg != nil {
					lane.cfg(c)
				}
			})
			be, failed := sendTimeoutBackend(t)
			h.apply(simple("", "slowclient", be.addr))
			addr, conf := strings.TrimPrefix(h.httpURL, "http://"), (*tls.Config)(nil)
			if lane.tls {
				addr, conf = h.httpsAddr(), clientTLS(tls.VersionTLS13)
			}

			t.Run("stops reading", func(t *testing.T) {
				c := dialSmallWindow(t, addr, conf)
				req := "GET " + lane.path + " HTTP/1.1\r\nHost: x\r\n\r\n"
				if lane.total < 0 {
					req = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
				}
				start := time.Now()
				if _, err := io.WriteString(c, req); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReaderSize(c, 4096)
				resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
				if err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{true: 101, false: 200}[lane.total < 0]; resp.StatusCode != want {
					t.Fatalf("status %d, want %d", resp.StatusCode, want)
				}
				awaitBackendClosed(t, failed, start, timeout)
				// What the proxy sent before giving up is there, then the connection ends short.
				var body io.Reader = resp.Body
				if lane.total < 0 {
					body = br
				}
				n, err := io.Copy(io.Discard, body)
				if err == nil && lane.total < 0 {
					err = io.ErrUnexpectedEOF // a tunnel ends with a plain close
				}
				if err == nil || n >= lane.total && lane.total > 0 {
					t.Fatalf("the client read %d bytes and %v; want the response cut short", n, err)
				}
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "reset") {
					return
				}
				t.Logf("the connection ended with %v after %d bytes", err, n)
			})

			if lane.total < 0 {
				return
			}
			t.Run("reads slowly", func(t *testing.T) {
				c := dialSmallWindow(t, addr, conf)
				if _, err := io.WriteString(c, "GET "+lane.path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), &http.Request{Method: "GET"})
				if err != nil {
					t.Fatal(err)
				}
				readSteadily(t, resp.Body, timeout, failed)
			})
		})
	}
}

// TestClientGoneMidChunkedResponse: a client that goes away in the middle of a chunked response
// frees the backend connection at once, in every lane that relays chunked responses, instead of the
// proxy reading the rest of the body first (which may never end).
func TestClientGoneMidChunkedResponse(t *testing.T) {
	t.Parallel()
	for _, lane := range []struct {
		name string
		cfg  func(*Config)
		path string
	}{
		{name: "event loop", path: "/chunked-huge"},
		{name: "handed over by the event loop", path: "/chunked-huge?untyped"},
		{name: "goroutine lane", cfg: func(c *Config) { c.DisableEventLoop = true }, path: "/chunked-huge"},
	} {
		t.Run(lane.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) {
				if lane.cfg != nil {
					lane.cfg(c)
				}
			})
			be, failed := sendTimeoutBackend(t)
			h.apply(simple("", "slowclient", be.addr))
			rc := h.dial(t)
			rc.send("GET " + lane.path + " HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(rc.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || len(resp.TransferEncoding) == 0 {
				t.Fatalf("status %d, transfer encoding %v: want a chunked 200", resp.StatusCode, resp.TransferEncoding)
			}
			rc.c.Close()
			select {
			case err := <-failed:
				t.Logf("the backend's write failed: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the backend connection is still open 10s after the client went away")
			}
		})
	}
}

// TestClientSendTimeoutHTTP2: over HTTP/2 (TLS, and h2c with prior knowledge) a stream whose client
// stops reading is reset after the client send timeout and its backend connection closed, while a
// slow but steady reader gets the whole response, and a stream that is merely quiet for longer
// than the timeout (nothing to write) is not reset.
func TestClientSendTimeoutHTTP2(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	for _, tlsOn := range []bool{true, false} {
		name := map[bool]string{true: "h2", false: "h2c"}[tlsOn]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) { c.ClientSendTimeout = timeout })
			be, failed := sendTimeoutBackend(t)
			h.apply(simple("", "slowclient", be.addr))
			protos := new(http.Protocols)
			base := h.httpURL
			if tlsOn {
				protos.SetHTTP2(true)
				base = h.httpsURL
			} else {
				protos.SetUnencryptedHTTP2(true)
			}
			client := &http.Client{Transport: &http.Transport{
				Protocols:       protos,
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			}}
			t.Cleanup(client.CloseIdleConnections)
			get := func(path string) *http.Response {
				t.Helper()
				resp, err := client.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
					t.Fatalf("GET %s: %d over %s, want 200 over HTTP/2", path, resp.StatusCode, resp.Proto)
				}
				return resp
			}

			t.Run("stops reading", func(t *testing.T) {
				start := time.Now()
				resp := get("/huge")
				defer resp.Body.Close()
				awaitBackendClosed(t, failed, start, timeout)
				n, err := io.Copy(io.Discard, resp.Body)
				if err == nil || n >= hugePieces*int64(len(hugePiece)) {
					t.Fatalf("the client read %d bytes and %v; want the stream reset", n, err)
				}
				t.Logf("the stream ended with %v after %d bytes", err, n)
			})

			t.Run("reads slowly", func(t *testing.T) {
				resp := get("/huge")
				defer resp.Body.Close()
				readSteadily(t, resp.Body, timeout, failed)
			})

			t.Run("quiet stream", func(t *testing.T) {
				resp := get("/quiet?for=" + (2 * timeout).String())
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil || string(body) != "before;after" {
					t.Fatalf("a stream quiet for twice the timeout: %q, %v; want it whole", body, err)
				}
			})
		})
	}
}

// readSteadily reads 16 MiB of hugePiece from body, 512 KiB at a time with a pause of a tenth of
// timeout between reads, so that the whole read takes about three timeouts, and checks that no
// backend write failed meanwhile. (The kernel wakes a writer blocked on a full socket when half of
// what its send buffer holds has gone, up to 2 MiB: a reader has to be that fast for the proxy's
// writes to make progress within a timeout, as for nginx's.)
func readSteadily(t *testing.T, body io.Reader, timeout time.Duration, failed <-chan error) {
	t.Helper()
	const size = 16 << 20
	start := time.Now()
	got, sum := readSlowly(t, io.LimitReader(body, size), 512<<10, timeout/10)
	if want := sha256.Sum256(bytes.Repeat(hugePiece, size/len(hugePiece))); got != size || !bytes.Equal(sum, want[:]) {
		t.Fatalf("the slow reader got %d bytes (hash %x), want %d (hash %x)", got, sum, size, want)
	}
	t.Logf("read %d bytes in %v", got, time.Since(start).Round(time.Millisecond))
	select {
	case err := <-failed:
		t.Fatalf("a backend write failed while the client read steadily: %v", err)
	default:
	}
}

// awaitBackendClosed waits for the backend's write to fail after a client stopped reading at start:
// no earlier than timeout, and within ten of them.
func awaitBackendClosed(t *testing.T, failed <-chan error, start time.Time, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-failed:
		if elapsed := time.Since(start); elapsed < timeout {
			t.Errorf("the backend connection was closed %v after the request, before the %v timeout", elapsed, timeout)
		}
		t.Logf("the backend's write failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(10 * timeout):
		t.Fatalf("the backend connection is still open %v after the client stopped reading", 10*timeout)
	}
}
