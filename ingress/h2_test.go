package ingress

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/ingress/selfsigned"
)

// TestGRPCOverH2C: a Service port with appProtocol grpc (or kubernetes.io/h2c) is reached over
// HTTP/2 without TLS; the exchange streams both ways and the gRPC status trailers reach the client,
// whether the client speaks h2c to the HTTP listener or h2 to the HTTPS one.
func TestGRPCOverH2C(t *testing.T) {
	for _, appProtocol := range []string{"grpc", "kubernetes.io/h2c"} {
		t.Run(appProtocol, func(t *testing.T) {
			h := newHarness(t)
			be := startBackend(t, "grpc", true, func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMajor != 2 || r.Header.Get("Content-Type") != "application/grpc" || r.Header.Get("Te") != "trailers" {
					http.Error(w, fmt.Sprintf("want gRPC over HTTP/2, got %s %q te=%q", r.Proto, r.Header.Get("Content-Type"), r.Header.Get("Te")), 400)
					return
				}
				w.Header().Set("Content-Type", "application/grpc")
				w.Header().Set("Trailer", "Grpc-Status")
				w.WriteHeader(200)
				// A bidirectional stream: echo each message as it arrives.
				br := bufio.NewReader(r.Body)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						break
					}
					io.WriteString(w, "echo "+line)
					w.(http.Flusher).Flush()
				}
				w.Header().Set("Grpc-Status", "0")
				w.Header().Set(http.TrailerPrefix+"Grpc-Message", "done")
			})
			in := simple("grpc.example.com", "grpc", be.addr)
			in.Services[0].Spec.Ports[0].AppProtocol = ptr.To(appProtocol)
			h.apply(in)

			h2c := new(http.Protocols)
			h2c.SetUnencryptedHTTP2(true)
			h2 := new(http.Protocols)
			h2.SetHTTP2(true)
			clients := map[string]*http.Client{
				h.httpURL:  {Transport: &http.Transport{Protocols: h2c}},
				h.httpsURL: {Transport: &http.Transport{Protocols: h2, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}},
			}
			for url, c := range clients {
				pr, pw := io.Pipe()
				req, _ := http.NewRequest(http.MethodPost, url+"/grpc.health.v1.Health/Watch", pr)
				req.Host = "grpc.example.com"
				req.Header.Set("Content-Type", "application/grpc")
				req.Header.Set("Te", "trailers")
				respc := make(chan *http.Response, 1)
				errc := make(chan error, 1)
				go func() {
					resp, err := c.Do(req)
					if err != nil {
						errc <- err
						return
					}
					respc <- resp
				}()
				io.WriteString(pw, "one\n")
				var resp *http.Response
				select {
				case resp = <-respc:
				case err := <-errc:
					t.Fatalf("%s: %v", url, err)
				}
				if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("%s: %d %s %s", url, resp.StatusCode, resp.Proto, b)
				}
				br := bufio.NewReader(resp.Body)
				for _, msg := range []string{"one", "two", "three"} {
					if msg != "one" {
						io.WriteString(pw, msg+"\n")
					}
					got, err := br.ReadString('\n')
					if err != nil || got != "echo "+msg+"\n" {
						t.Fatalf("%s: stream message %q: %v", url, got, err)
					}
				}
				pw.Close()
				io.ReadAll(br)
				resp.Body.Close()
				if resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Grpc-Message") != "done" {
					t.Errorf("%s: trailers %v, want grpc-status 0 and grpc-message done", url, resp.Trailer)
				}
			}
		})
	}
}

// TestProxyProtocol: with --ingress-proxy-protocol, the client address comes from the PROXY header.
func TestProxyProtocol(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ProxyProtocol = true })
	be := startBackend(t, "echo", false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For")+" "+r.Header.Get("X-Real-Ip"))
	})
	h.apply(simple("", "echo", be.addr))
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "PROXY TCP4 192.0.2.101 203.0.113.1 50000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "192.0.2.101 192.0.2.101" {
		t.Errorf("backend saw client %q, want 192.0.2.101 from the PROXY header", body)
	}
	// Without a header the connection is refused.
	plain, err := net.Dial("tcp", strings.TrimPrefix(h.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(plain), nil); err == nil {
		t.Errorf("a connection without PROXY header got %d", resp.StatusCode)
	}
}

func mustCert(t *testing.T, cn string, names ...string) *corev1.Secret {
	t.Helper()
	c, err := selfsigned.New(cn, names, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sec := fx.TLSSecret(cn, c.CertPEM, c.KeyPEM)
	if i := strings.IndexByte(cn, '-'); i > 0 {
		sec.Name = cn[:i]
	}
	return sec
}

// tlsEntries pairs secret names with hosts: "s1", "h1", "s2", "h2" ...
func tlsEntries(pairs ...string) []networkingv1.IngressTLS {
	var out []networkingv1.IngressTLS
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, networkingv1.IngressTLS{SecretName: pairs[i], Hosts: []string{pairs[i+1]}})
	}
	return out
}

// metric returns the sum of a metric's samples whose label has the given value.
func (h *harness) metric(name, label, value string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == label && l.GetValue() == value {
					if c := m.GetCounter(); c != nil {
						sum += c.GetValue()
					}
					if g := m.GetGauge(); g != nil {
						sum += g.GetValue()
					}
				}
			}
		}
	}
	return sum
}
