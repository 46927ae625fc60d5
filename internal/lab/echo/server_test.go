package echo

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var testNames = Names{Pod: "echo-7d9f", Namespace: "demo", Ingress: "web", Service: "echo"}

// start serves cfg on loopback until the test ends and returns its first TCP and UDP address.
func start(t testing.TB, cfg Config) (tcp, udp string) {
	t.Helper()
	cfg.Host = "127.0.0.1"
	if cfg.Ports == nil {
		cfg.Ports = []int{0}
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeEcho
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.TCPAddrs()[0].String(), s.UDPAddrs()[0].String()
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestEchoJSON(t *testing.T) {
	addr, _ := start(t, Config{Names: testNames})
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	clients := map[string]*http.Client{
		"HTTP/1.1": {},
		"HTTP/2.0": {Transport: &http.Transport{Protocols: h2}},
	}
	for proto, c := range clients {
		t.Run(proto, func(t *testing.T) {
			resp, body := get(t, c, "http://"+addr+"/some/path?q=1", map[string]string{"Host": "demo.example", "X-Probe": "yes"})
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			var got Response
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			want := Response{Path: "/some/path?q=1", Host: "demo.example", Method: "GET", Proto: proto,
				Namespace: "demo", Ingress: "web", Service: "echo", Pod: "echo-7d9f"}
			if got.Headers.Get("X-Probe") != "yes" {
				t.Errorf("headers %v lack X-Probe", got.Headers)
			}
			got.Headers = nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
			if got.TLS != nil {
				t.Errorf("plain request reports TLS %+v", got.TLS)
			}
		})
	}
}

func TestNetexecEndpoints(t *testing.T) {
	addr, _ := start(t, Config{Names: testNames})
	// A dialer with a known local address tells what /clientip must say.
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: freePort(t)}
	c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext}}
	for path, want := range map[string]string{
		"/health":        "ok",
		"/healthz":       "ok",
		"/hostname":      "echo-7d9f",
		"/echo?msg=hi+x": "hi x",
		"/clientip":      local.String(),
	} {
		resp, body := get(t, c, "http://"+addr+path, nil)
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("%s: %d %q, want 200 %q", path, resp.StatusCode, body, want)
		}
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestModes(t *testing.T) {
	for _, tt := range []struct{ mode, body, want string }{
		{ModeStatic, "fixed", "fixed"},
		{ModeHostname, "", "echo-7d9f"},
	} {
		addr, _ := start(t, Config{Mode: tt.mode, Body: tt.body, Names: testNames})
		resp, body := get(t, http.DefaultClient, "http://"+addr+"/anything", nil)
		if resp.StatusCode != http.StatusOK || string(body) != tt.want {
			t.Errorf("mode %s: %d %q, want %q", tt.mode, resp.StatusCode, body, tt.want)
		}
	}
}

func TestWebSocketEcho(t *testing.T) {
	addr, _ := start(t, Config{Names: testNames})
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for i, m := range []struct {
		typ  int
		data string
	}{{websocket.TextMessage, "hello"}, {websocket.BinaryMessage, "\x00\x01\x02"}, {websocket.TextMessage, "again"}} {
		if err := c.WriteMessage(m.typ, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
		typ, data, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ != m.typ || string(data) != m.data {
			t.Errorf("message %d: got (%d, %q), want (%d, %q)", i, typ, data, m.typ, m.data)
		}
	}
}

func TestGRPCHealth(t *testing.T) {
	addr, _ := start(t, Config{Names: testNames})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status %v, want SERVING", resp.GetStatus())
	}
}

func TestUDP(t *testing.T) {
	tcp, udp := start(t, Config{Names: testNames})
	_, tcpPort, _ := net.SplitHostPort(tcp)
	_, udpPort, _ := net.SplitHostPort(udp)
	if tcpPort != udpPort {
		t.Errorf("UDP echo on port %s, want the TCP port %s", udpPort, tcpPort)
	}
	c, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for msg, want := range map[string]string{
		"plain bytes\n": "plain bytes\n",
		"hostname":      "echo-7d9f",
		"hostname\n":    "echo-7d9f",
		"echo abc":      "abc",
		"clientip":      c.LocalAddr().String(),
	} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != want {
			t.Errorf("sent %q, got %q, want %q", msg, buf[:n], want)
		}
	}
}

func TestRepeatedPortsServedOnce(t *testing.T) {
	port := freePort(t) // a TCP-free port is almost always UDP-free too; Listen fails loudly if not.
	s, err := Listen(Config{Host: "127.0.0.1", Ports: []int{port, port}, UDPPorts: []int{port}, Mode: ModeEcho})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	want := "127.0.0.1:" + strconv.Itoa(port)
	if len(s.TCPAddrs()) != 1 || s.TCPAddrs()[0].String() != want || len(s.UDPAddrs()) != 1 || s.UDPAddrs()[0].String() != want {
		t.Errorf("TCP %v UDP %v, want each once on %s", s.TCPAddrs(), s.UDPAddrs(), want)
	}
}

// TestDelayShutdown checks that a stopped server still answers during its shutdown delay, as a
// terminating agnhost netexec pod does.
func TestDelayShutdown(t *testing.T) {
	s, err := Listen(Config{Host: "127.0.0.1", Ports: []int{0}, Mode: ModeEcho, DelayShutdown: 2 * time.Second, Names: testNames})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	cancel()
	url := "http://" + s.TCPAddrs()[0].String() + "/hostname"
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, body := get(t, c, url, nil); string(body) != "echo-7d9f" {
		t.Errorf("during the delay: %q", body)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(url); err == nil {
		t.Error("still answering after Serve returned")
	}
}
