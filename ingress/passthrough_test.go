package ingress

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baregate/baregate/ingress/selfsigned"
)

// TestSSLPassthrough: a host whose Ingress has ssl-passthrough reaches its TLS backend unterminated
// (the client sees the backend's own certificate and speaks to the backend), while other hosts on the
// same listener are still terminated by the proxy.
func TestSSLPassthrough(t *testing.T) {
	h := newHarness(t)
	cert, err := selfsigned.New("tls backend", []string{"pass.example.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	backendSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from the TLS backend over "+r.Proto)
	})}
	go backendSrv.Serve(ln)
	t.Cleanup(func() { backendSrv.Close() })
	plain := startBackend(t, "web", false, okHandler)

	in := merge(simple("pass.example.test", "secure", ln.Addr().String()), simple("web.example.test", "web", plain.addr))
	in.Ingresses[0].Annotations = map[string]string{"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}
	h.apply(in)
	addr := strings.TrimPrefix(h.httpsURL, "https://")

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cert.CertPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "pass.example.test", RootCAs: pool})
	if err != nil {
		t.Fatalf("handshake through the passthrough: %v", err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0]; !got.Equal(cert.TLS.Leaf) {
		t.Fatalf("client saw certificate %q, want the backend's own", got.Subject)
	}
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: pass.example.test\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "from the TLS backend over HTTP/1.1" {
		t.Errorf("passthrough answer %q", body)
	}

	// Another host on the same listener is terminated by the proxy (its default certificate) and routed.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "web.example.test"}}}
	req, _ := http.NewRequest(http.MethodGet, h.httpsURL+"/", nil)
	req.Host = "web.example.test"
	r2, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != http.StatusOK || string(b2) != "ok" || r2.TLS.PeerCertificates[0].Equal(cert.TLS.Leaf) {
		t.Errorf("terminated host: %d %q, certificate %q", r2.StatusCode, b2, r2.TLS.PeerCertificates[0].Subject)
	}

	// A ClientHello that never comes does not hold up other connections.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	r3, err := client.Do(req)
	if err != nil {
		t.Fatalf("with an idle connection open: %v", err)
	}
	r3.Body.Close()
}
