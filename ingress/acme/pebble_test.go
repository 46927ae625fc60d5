package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/baregate/baregate/ingress/acme/pebbletest"
	"github.com/baregate/baregate/ingress/selfsigned"
	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/lab"
)

// replica is one gateway's ACME manager with its own loopback listeners, as the ingress serves them.
type replica struct {
	m                  *Manager
	rec                *record.FakeRecorder
	httpPort, tlsPort  int
	httpHits, alpnHits atomic.Int64
}

func newReplica(t *testing.T, client kubernetes.Interface, node, directory, caFile string, http01 bool) *replica {
	t.Helper()
	cfg := Config{DirectoryURL: directory, CAFile: caFile, HTTP01: http01, RenewBefore: 30 * 24 * time.Hour, RetryInterval: time.Minute}
	r := &replica{rec: record.NewFakeRecorder(100)}
	m, err := New(cfg, cluster.Deps{NodeName: node, Namespace: "baregate-system", Client: client, Recorder: r.rec})
	if err != nil {
		t.Fatal(err)
	}
	r.m = m
	def, err := selfsigned.New("default", []string{"ingress.local"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hsrv := &http.Server{Handler: m.HTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.Error(w, "routed", http.StatusTeapot)
	}))}
	go hsrv.Serve(countingListener{hl, &r.httpHits})
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tsrv := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: &tls.Config{
		NextProtos: []string{"http/1.1", acme.ALPNProto},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
				r.alpnHits.Add(1)
			}
			if c, err := m.GetCertificate(hello); c != nil || err != nil {
				return c, err
			}
			return &def.TLS, nil
		},
	}}
	go tsrv.ServeTLS(tl, "", "")
	t.Cleanup(func() { hsrv.Close(); tsrv.Close() })
	r.httpPort, r.tlsPort = hl.Addr().(*net.TCPAddr).Port, tl.Addr().(*net.TCPAddr).Port
	return r
}

// countingListener counts connections (the validator's http-01 requests).
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func acmeSnapshot(hosts ...string) *cluster.Snapshot {
	var ings []*networkingv1.Ingress
	for _, h := range hosts {
		ings = append(ings, &networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: strings.Split(h, ".")[0], Annotations: map[string]string{Annotation: "true"}},
			Spec:       networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: h}}},
		})
	}
	return &cluster.Snapshot{Ingresses: ings}
}

// served waits until m serves a certificate for host.
func served(t *testing.T, m *Manager, host string, within time.Duration) *tls.Certificate {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if c, _ := m.GetCertificate(&tls.ClientHelloInfo{ServerName: host}); c != nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s after %s: %+v", host, within, m.ACMECertificates())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func verifyChain(t *testing.T, c *tls.Certificate, root *x509.Certificate, host string) {
	t.Helper()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("certificate for %s does not verify against pebble's root: %v", host, err)
	}
}

// handshake connects to a replica's TLS listener as a browser would and returns the leaf it sees,
// verified against root.
func handshake(t *testing.T, port int, host string, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(root)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{ServerName: host, RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS handshake for %s: %v", host, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func TestPebble(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, client := lab.StartTestControlPlane(ctx, t, "baregate-system", "shop")

	// B is the replica the CA's validator reaches; A orders. So every successful validation below
	// was answered by a replica that did not start the order, from the shared Secrets.
	b := newReplica(t, client, "node-b", "https://unused.invalid/dir", "", true)
	alpnCA := pebbletest.Start(t, pebbletest.Options{HTTPPort: pebbletest.FreePort(t), TLSPort: b.tlsPort})
	httpCA := pebbletest.Start(t, pebbletest.Options{HTTPPort: b.httpPort, TLSPort: pebbletest.FreePort(t)})
	all := acmeSnapshot("alpn.example.test", "http.example.test", "race.example.test", "fail.example.test")
	b.m.Update(all)

	t.Run("tls-alpn-01", func(t *testing.T) {
		a := newReplica(t, client, "node-a", alpnCA.DirectoryURL, alpnCA.CAFile, false)
		a.m.Update(acmeSnapshot("alpn.example.test"))
		if err := a.m.sync(ctx); err != nil {
			t.Fatal(err)
		}
		c := served(t, a.m, "alpn.example.test", 0)
		verifyChain(t, c, alpnCA.Root(t), "alpn.example.test")
		if a.m.Orders() != 1 || b.alpnHits.Load() == 0 || a.alpnHits.Load() != 0 {
			t.Errorf("orders %d, validations answered by B %d, by A %d; want 1 order answered by B only", a.m.Orders(), b.alpnHits.Load(), a.alpnHits.Load())
		}
		checkTLSSecret(ctx, t, client, "alpn.example.test-tls", c)

		// B loads it from the cache and serves it to clients. (B syncs only this host: it has no
		// directory to order the others from; it just answers their challenges.)
		b.m.Update(acmeSnapshot("alpn.example.test"))
		err := b.m.sync(ctx)
		b.m.Update(all)
		if err != nil {
			t.Fatal(err)
		}
		got := handshake(t, b.tlsPort, "alpn.example.test", alpnCA.Root(t))
		if !got.Equal(c.Leaf) {
			t.Errorf("B serves serial %s, A ordered %s", got.SerialNumber, c.Leaf.SerialNumber)
		}
		if b.m.Orders() != 0 {
			t.Errorf("B ordered %d certificates", b.m.Orders())
		}

		// A restarted gateway reuses the stored certificate.
		restarted := newReplica(t, client, "node-a", alpnCA.DirectoryURL, alpnCA.CAFile, false)
		restarted.m.Update(acmeSnapshot("alpn.example.test"))
		if err := restarted.m.sync(ctx); err != nil {
			t.Fatal(err)
		}
		if again := served(t, restarted.m, "alpn.example.test", 0); !again.Leaf.Equal(c.Leaf) || restarted.m.Orders() != 0 {
			t.Errorf("after a restart: serial %s (want %s), %d orders (want 0)", again.Leaf.SerialNumber, c.Leaf.SerialNumber, restarted.m.Orders())
		}

		// Renewal: once due, the next sync orders a new certificate and rewrites the Secret.
		restarted.m.now = func() time.Time { return restarted.m.renewAt(c.Leaf).Add(time.Minute) }
		if err := restarted.m.sync(ctx); err != nil {
			t.Fatal(err)
		}
		renewed := served(t, restarted.m, "alpn.example.test", 0)
		if renewed.Leaf.Equal(c.Leaf) || restarted.m.Orders() != 1 {
			t.Fatalf("renewal: serial %s (old %s), %d orders; want a new certificate from 1 order", renewed.Leaf.SerialNumber, c.Leaf.SerialNumber, restarted.m.Orders())
		}
		verifyChain(t, renewed, alpnCA.Root(t), "alpn.example.test")
		checkTLSSecret(ctx, t, client, "alpn.example.test-tls", renewed)
	})

	t.Run("http-01", func(t *testing.T) {
		a := newReplica(t, client, "node-a", httpCA.DirectoryURL, httpCA.CAFile, true)
		a.m.Update(acmeSnapshot("http.example.test"))
		if err := a.m.sync(ctx); err != nil {
			t.Fatal(err)
		}
		st := a.m.ACMECertificates()
		if len(st) != 1 || st[0].State != cluster.ACMEIssued {
			t.Fatalf("status %+v, want issued", st)
		}
		c := served(t, a.m, "http.example.test", 0)
		verifyChain(t, c, httpCA.Root(t), "http.example.test")
		// tls-alpn-01 is tried first and cannot succeed here (nothing listens on the TLS port the CA
		// dials); autocert then orders again with http-01.
		if b.httpHits.Load() == 0 || a.httpHits.Load() != 0 {
			t.Errorf("http-01 validations answered by B %d, by A %d; want B only", b.httpHits.Load(), a.httpHits.Load())
		}
		// Other paths and hosts go on to routing.
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(b.httpPort) + "/.well-known/acme-challenge/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot {
			t.Errorf("challenge path of a non-ACME host: status %d, want the routed 418", resp.StatusCode)
		}
	})

	t.Run("two replicas order once", func(t *testing.T) {
		d := newReplica(t, client, "node-d", alpnCA.DirectoryURL, alpnCA.CAFile, false)
		e := newReplica(t, client, "node-e", alpnCA.DirectoryURL, alpnCA.CAFile, false)
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		snap := acmeSnapshot("race.example.test")
		for _, r := range []*replica{d, e} {
			r.m.Update(snap)
			go r.m.Run(rctx)
		}
		cd, ce := served(t, d.m, "race.example.test", time.Minute), served(t, e.m, "race.example.test", time.Minute)
		if n := d.m.Orders() + e.m.Orders(); n != 1 || !cd.Leaf.Equal(ce.Leaf) {
			t.Errorf("%d orders (want 1), serials %s and %s (want equal)", n, cd.Leaf.SerialNumber, ce.Leaf.SerialNumber)
		}
	})

	t.Run("failure is an Event with the CA's error", func(t *testing.T) {
		a := newReplica(t, client, "node-a", httpCA.DirectoryURL, httpCA.CAFile, false) // tls-alpn-01 only: nothing answers
		a.m.Update(acmeSnapshot("fail.example.test"))
		if err := a.m.sync(ctx); err != nil {
			t.Fatal(err)
		}
		st := a.m.ACMECertificates()
		if len(st) != 1 || st[0].State != cluster.ACMEFailed || !strings.Contains(st[0].LastError, "tls-alpn-01 challenge for fail.example.test failed") {
			t.Fatalf("status %+v, want failed with the CA's error", st)
		}
		select {
		case ev := <-a.rec.Events:
			if !strings.HasPrefix(ev, "Warning ACMEOrderFailed") || !strings.Contains(ev, "Failed to connect") {
				t.Errorf("event %q, want a Warning with the CA's error", ev)
			}
		default:
			t.Error("no Event for the failed order")
		}
		// Another replica taking the Lease next waits out the back-off instead of ordering again.
		other := newReplica(t, client, "node-f", httpCA.DirectoryURL, httpCA.CAFile, false)
		other.m.Update(acmeSnapshot("fail.example.test"))
		if err := other.m.sync(ctx); err != nil {
			t.Fatal(err)
		}
		if other.m.Orders() != 0 || other.m.ACMECertificates()[0].State != cluster.ACMEFailed {
			t.Errorf("the next replica ordered %d times, status %+v", other.m.Orders(), other.m.ACMECertificates())
		}
	})
}

func checkTLSSecret(ctx context.Context, t *testing.T, client kubernetes.Interface, name string, c *tls.Certificate) {
	t.Helper()
	s, err := client.CoreV1().Secrets("shop").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("TLS Secret: %v", err)
	}
	kp, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatalf("TLS Secret %s does not hold a key pair: %v", name, err)
	}
	if s.Type != corev1.SecretTypeTLS || s.Labels[ManagedLabel] != "true" || !kp.Leaf.Equal(c.Leaf) || len(kp.Certificate) != len(c.Certificate) {
		t.Errorf("TLS Secret %s: type %s, labels %v, serial %s (want %s)", name, s.Type, s.Labels, kp.Leaf.SerialNumber, c.Leaf.SerialNumber)
	}
}
