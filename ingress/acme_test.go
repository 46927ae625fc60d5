package ingress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/baregate/baregate/ingress/acme"
	"github.com/baregate/baregate/ingress/acme/pebbletest"
	"github.com/baregate/baregate/internal/cluster"
)

// lateSource lets the test start the listeners before the ACME manager exists: the manager needs
// Pebble's directory, and Pebble needs the listeners' ports.
type lateSource struct{ m atomic.Pointer[acme.Manager] }

func (s *lateSource) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m := s.m.Load(); m != nil {
		return m.GetCertificate(hello)
	}
	return nil, nil
}

func (s *lateSource) HTTPHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m := s.m.Load(); m != nil {
			m.HTTPHandler(next).ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// TestACMEThroughListeners issues certificates from Pebble through the ingress's own listeners
// (tls-alpn-01 on HTTPS, http-01 on HTTP, both before routing) and then serves them to clients
// that trust only Pebble's root.
func TestACMEThroughListeners(t *testing.T) {
	src := &lateSource{}
	h := newHarness(t, func(c *Config) { c.Certificates = src })
	be := startBackend(t, "web", false, okHandler)
	in := merge(simple("alpn.example.test", "alpn", be.addr), simple("http.example.test", "web", be.addr))
	for _, ing := range in.Ingresses {
		ing.Annotations = map[string]string{acme.Annotation: "true"}
	}
	snap := h.apply(in)
	_, httpsPort, _ := net.SplitHostPort(h.httpsURL[len("https://"):])
	_, httpPort, _ := net.SplitHostPort(h.httpURL[len("http://"):])
	port := func(s string) int { n, _ := strconv.Atoi(s); return n }

	for _, tc := range []struct {
		challenge, host string
		opts            pebbletest.Options
	}{
		{"tls-alpn-01", "alpn.example.test", pebbletest.Options{TLSPort: port(httpsPort), HTTPPort: pebbletest.FreePort(t)}},
		{"http-01", "http.example.test", pebbletest.Options{TLSPort: pebbletest.FreePort(t), HTTPPort: port(httpPort)}},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			ca := pebbletest.Start(t, tc.opts)
			m, err := acme.New(acme.Config{DirectoryURL: ca.DirectoryURL, CAFile: ca.CAFile, HTTP01: tc.challenge == "http-01", RenewBefore: 720 * time.Hour, RetryInterval: time.Minute},
				cluster.Deps{NodeName: "node1", Namespace: "baregate-system", Client: fake.NewClientset(), Recorder: record.NewFakeRecorder(100)})
			if err != nil {
				t.Fatal(err)
			}
			src.m.Store(m)
			m.Update(snap)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); m.Run(ctx) }()
			defer func() { cancel(); <-done }()

			pool := x509.NewCertPool()
			pool.AddCert(ca.Root(t))
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: tc.host},
			}}
			deadline := time.Now().Add(time.Minute)
			for {
				req, _ := http.NewRequest(http.MethodGet, h.httpsURL+"/", nil)
				req.Host = tc.host
				resp, err := client.Do(req)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || string(body) != "ok" {
						t.Fatalf("GET https://%s/ with the ACME certificate: %d %q", tc.host, resp.StatusCode, body)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no certificate from Pebble's root served for %s: %v (ACME state %+v)", tc.host, err, m.ACMECertificates())
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}
