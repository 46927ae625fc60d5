package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os/exec"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/ingress/acme/pebbletest"
	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/test/e2e/framework"
)

// TestACMEThroughLBIP: a local ACME CA (Pebble on client1) issues certificates for Ingress hosts
// annotated baregate.io/acme, validating through the ingress Service's LB IP, once with tls-alpn-01
// (port 443) and once with http-01 (port 80, tls-alpn-01 unreachable). client1 then verifies the
// chain against Pebble's root. Both gateways run ACME, yet the CA sees one order per certificate
// (the Lease), and restarting both gateways reuses the stored certificate without a new order.
func TestACMEThroughLBIP(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	class, ip := ingressFrontDoor(t, f, ns, "203.0.113.230-203.0.113.231")
	f.Apply(ns, framework.EchoApp("echo", 2, "acme")+framework.Service("echo", "ClusterIP", "app: echo", "", ""))
	f.WaitPodsReady(ns, "app=echo", 2)
	f.WaitReadyEndpoints(ns, "echo", 2)
	t.Cleanup(func() {
		f.Lab.SetGatewayAccess("", nil)
		restartGateways(f)
	})
	clientIP, _ := lab.ClientIPs(1)

	for k, tc := range []struct {
		challenge, name string
		tlsPort         int
		wantOrders      int
		restartTest     bool
	}{
		{"tls-alpn-01", "alpn", 443, 1, true},
		// autocert tries tls-alpn-01 first; with the CA dialling a closed port it fails, and a second
		// order uses http-01.
		{"http-01", "http", 4443, 2, false},
	} {
		func() { // one Pebble per challenge type; the framework's helpers belong to the parent test
			host := tc.name + "." + ns + ".example"
			t.Logf("%s: ordering for %s", tc.challenge, host)
			ca := pebbletest.Start(t, pebbletest.Options{
				ListenIP: clientIP, Port: 14000 + k, HTTPPort: 80, TLSPort: tc.tlsPort, Hosts: map[string]string{host: ip},
				Command: func(argv ...string) *exec.Cmd { return f.Lab.Command(context.Background(), lab.ClientName(1), argv...) },
				Dial:    lab.DialContextIn(f.Lab.ClientNetns(1)),
			})
			f.Lab.SetGatewayAccess("", []string{"--ingress-acme-directory-url=" + ca.DirectoryURL, "--ingress-acme-ca-file=" + ca.CAFile})
			restartGateways(f)
			f.Apply(ns, acmeIngress(tc.name, class, host))
			roots := x509.NewCertPool()
			roots.AddCert(ca.Root(t))
			c := newIngressClient(t, f, ip, roots)
			start := time.Now()
			waitEcho(t, f, c, "https://"+host+"/")
			t.Logf("%s: certificate issued and served after %s", tc.challenge, time.Since(start).Round(100*time.Millisecond))
			if n := ca.Orders(t); n != tc.wantOrders {
				t.Errorf("%s: the CA saw %d orders, want %d (two gateways run ACME; the Lease lets one order)", tc.challenge, n, tc.wantOrders)
			}
			sec, err := f.Client().CoreV1().Secrets(ns).Get(f.Ctx, host+"-tls", metav1.GetOptions{})
			if err != nil || sec.Type != corev1.SecretTypeTLS || len(sec.Data[corev1.TLSCertKey]) == 0 {
				t.Errorf("kubernetes.io/tls Secret %s-tls: %v", host, err)
			}
			if !tc.restartTest {
				return
			}
			_, before, err := c.getEcho(f.Ctx, "https://"+host+"/")
			if err != nil {
				t.Fatal(err)
			}
			restartGateways(f)
			c.CloseIdleConnections() // connections to the old gateway processes are gone
			var after *http.Response
			f.WaitFor(time.Minute, "an answer after the restart", func(ctx context.Context) (bool, error) {
				_, r, err := c.getEcho(ctx, "https://"+host+"/")
				after = r
				return err == nil, err
			})
			if !after.TLS.PeerCertificates[0].Equal(before.TLS.PeerCertificates[0]) || ca.Orders(t) != tc.wantOrders {
				t.Errorf("after restarting both gateways: serial %s (before %s), %d orders (want %d)",
					after.TLS.PeerCertificates[0].SerialNumber, before.TLS.PeerCertificates[0].SerialNumber, ca.Orders(t), tc.wantOrders)
			}
		}()
	}
}

// restartGateways restarts both gateways, one after the other, with the lab's current arguments.
func restartGateways(f *framework.T) {
	for i := 1; i <= 2; i++ {
		f.KillGateway(i)
		f.RestartGateway(i)
	}
}

// acmeIngress is an Ingress asking for an ACME certificate for host, routing it to Service echo.
func acmeIngress(name, class, host string) string {
	return fmt.Sprintf(`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: %s
  annotations: {baregate.io/acme: "true"}
spec:
  ingressClassName: %s
  rules:
  - host: %s
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: echo
            port: {name: http}
`, name, class, host)
}
