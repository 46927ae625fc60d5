package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/lab/echo"
	"github.com/baregate/baregate/test/e2e/framework"
)

// ingressServiceName is the gateway's default --ingress-service: the Service whose address the
// leader copies into the status of every served Ingress.
const ingressServiceName = "baregate-ingress"

// TestIngressHTTPAndHTTPSThroughLBIP: client1 reaches Ingress hosts over HTTP and over HTTPS on the
// ingress Service's LB IP; HTTPS presents the certificate of the Ingress's kubernetes.io/tls Secret,
// chosen by SNI and verified against the test's own CA, over HTTP/2; both reach echo pods on both
// nodes. Plain HTTP to the TLS host is redirected to HTTPS, as ingress-nginx does by default.
func TestIngressHTTPAndHTTPSThroughLBIP(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	class, ip := ingressFrontDoor(t, f, ns, "203.0.113.220-203.0.113.221")
	secure, plain := "shop."+ns+".example", "plain."+ns+".example"
	ca := newTestCA(t)
	f.Apply(ns, ca.tlsSecret(t, "shop-tls", secure)+"\n---"+framework.EchoApp("echo", 4, "shop")+framework.Service("echo", "ClusterIP", "app: echo", "", "")+
		ingress("shop", class, secure, "shop-tls")+ingress("plain", class, plain, ""))
	podNode := map[string]string{}
	for _, p := range f.WaitPodsReady(ns, "app=echo", 4) {
		podNode[p.Name] = p.Spec.NodeName
	}
	if nodes := slices.Compact(slices.Sorted(maps.Values(podNode))); len(nodes) != 2 {
		t.Fatalf("the echo pods run on %v; the test needs both nodes", nodes)
	}
	f.WaitReadyEndpoints(ns, "echo", 4)
	c := newIngressClient(t, f, ip, ca.pool)

	for _, tc := range []struct{ scheme, host, path string }{{"http", plain, "/http/path"}, {"https", secure, "/https/path"}} {
		scheme, host, path := tc.scheme, tc.host, tc.path
		url := scheme + "://" + host + path
		waitEcho(t, f, c, url)
		nodes := map[string]int{}
		for range 20 {
			r, resp, err := c.getEcho(f.Ctx, url)
			if err != nil {
				t.Fatalf("GET %s through %s: %v", url, ip, err)
			}
			node, ok := podNode[r.Pod]
			if !ok || r.Host != host || r.Path != path || r.Ingress != "shop" || r.Namespace != ns {
				t.Fatalf("GET %s through %s answered %+v; want host %s and path %s from one of the pods %v", url, ip, r, host, path, podNode)
			}
			nodes[node]++
			if got := r.Headers.Get("X-Forwarded-Proto"); got != scheme {
				t.Fatalf("the pod saw X-Forwarded-Proto %q; want %s", got, scheme)
			}
			if scheme == "https" {
				if resp.ProtoMajor != 2 {
					t.Fatalf("HTTPS answered over %s; want HTTP/2", resp.Proto)
				}
				if leaf := resp.TLS.PeerCertificates[0]; !leaf.Equal(ca.leaf[host]) {
					t.Fatalf("HTTPS presented certificate %q (serial %v); want the Secret's (serial %v)", leaf.Subject, leaf.SerialNumber, ca.leaf[host].SerialNumber)
				}
			}
		}
		t.Logf("%s requests per node: %v", scheme, nodes)
		if len(nodes) != 2 {
			t.Errorf("20 %s requests reached only the nodes %v; want pods on both nodes", scheme, nodes)
		}
	}

	resp, err := c.Get("http://" + secure + "/to/tls?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusPermanentRedirect || loc != "https://"+secure+"/to/tls?x=1" {
		t.Errorf("plain HTTP to the TLS host answered %s to %q; want 308 to https://%s/to/tls?x=1", resp.Status, loc, secure)
	}
	// A server name with no certificate gets the default one, which the test's CA did not sign.
	_, _, err = c.getEcho(f.Ctx, "https://"+plain+"/")
	if err == nil || !errors.As(err, new(*tls.CertificateVerificationError)) {
		t.Errorf("HTTPS for a host without a Secret: %v; want a certificate the test's CA did not sign", err)
	}
}

// TestIngressSpreadsOverTenReplicas: every one of ten replicas behind an Ingress host gets requests.
func TestIngressSpreadsOverTenReplicas(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	host := "ten." + ns + ".example"
	ip, pods := echoBehindIngress(t, f, ns, host, 10, "203.0.113.222-203.0.113.223")
	c := newIngressClient(t, f, ip, nil)
	url := "http://" + host + "/spread"
	// The route table may still be catching up with the last endpoints: wait until each pod has
	// answered once, then measure the spread over a fresh batch.
	seen := map[string]bool{}
	f.WaitFor(time.Minute, "every one of the ten pods to answer through the Ingress", func(ctx context.Context) (bool, error) {
		r, _, err := c.getEcho(ctx, url)
		if err != nil {
			return false, err
		}
		seen[r.Pod] = true
		return len(seen) == 10, fmt.Errorf("answers so far from %d pods", len(seen))
	})
	counts := map[string]int{}
	for range 200 {
		r, _, err := c.getEcho(f.Ctx, url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		counts[r.Pod]++
	}
	t.Logf("200 requests per pod: %v", counts)
	for _, p := range pods {
		if counts[p] == 0 {
			t.Errorf("pod %s got none of 200 requests (counts %v)", p, counts)
		}
	}
	if len(counts) != 10 {
		t.Errorf("answers came from %d pods: %v; want the ten of the Deployment %v", len(counts), counts, pods)
	}
}

// TestIngressRollingUpdateUnderLoad: clients keep sending requests to an Ingress host while its
// Deployment rolls to a new template; no request fails, with a 5xx or a connection error.
func TestIngressRollingUpdateUnderLoad(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	host := "roll." + ns + ".example"
	ip, old := echoBehindIngress(t, f, ns, host, 4, "203.0.113.226-203.0.113.227")
	url := "http://" + host + "/roll"

	load := startLoad(t, f, ip, url, 4)
	time.Sleep(2 * time.Second) // some traffic before the change
	patch := `{"spec":{"template":{"spec":{"containers":[{"name":"echo","env":[{"name":"ROLLED","value":"1"}]}]}}}}`
	if _, err := f.Client().AppsV1().Deployments(ns).Patch(f.Ctx, "echo", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("changing the Deployment's env: %v", err)
	}
	start := time.Now()
	waitRolledOut(t, f, ns, "echo", old)
	t.Logf("the Deployment rolled out in %s", time.Since(start).Round(100*time.Millisecond))
	time.Sleep(2 * time.Second) // and some after it
	st := load.stop()

	t.Logf("under load during the roll: %d requests, %d 5xx, %d other non-200, %d connection errors %q; answers from %d old and %d new pods",
		st.requests, st.status5xx, st.otherStatus, st.connErrors, st.firstErrors, st.fromOld(old), len(st.pods)-st.fromOld(old))
	if st.status5xx != 0 || st.connErrors != 0 || st.otherStatus != 0 {
		t.Errorf("rolling the Deployment under load failed %d of %d requests: %d 5xx, %d other non-200, %d connection errors (first: %q)",
			st.status5xx+st.connErrors+st.otherStatus, st.requests, st.status5xx, st.otherStatus, st.connErrors, st.firstErrors)
	}
	if st.requests < 100 {
		t.Errorf("only %d requests during the roll; the load did not run", st.requests)
	}
	if len(st.pods)-st.fromOld(old) == 0 {
		t.Errorf("no answer came from a pod of the new template: %v", st.pods)
	}
}

// TestIngressOfUnknownClassGetsNoStatus: while a served Ingress gets the ingress Service's address
// in its status, Ingresses of another controller's class, of a class that does not exist, or of no
// class (with no default class) are left alone.
func TestIngressOfUnknownClassGetsNoStatus(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	class, ip := ingressFrontDoor(t, f, ns, "203.0.113.228-203.0.113.229")
	foreign := f.AddIngressClass(ns+"-foreign", "example.com/another-controller")
	f.Apply(ns, framework.EchoApp("echo", 1, "")+framework.Service("echo", "ClusterIP", "app: echo", "", "")+
		ingress("served", class, "served."+ns+".example", "")+
		ingress("foreign", foreign, "foreign."+ns+".example", "")+
		ingress("missing-class", ns+"-no-such-class", "missing."+ns+".example", "")+
		ingress("classless", "", "classless."+ns+".example", ""))
	ingStatus := func(ctx context.Context, name string) ([]string, error) {
		ing, err := f.Client().NetworkingV1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, lb := range ing.Status.LoadBalancer.Ingress {
			out = append(out, lb.IP+lb.Hostname)
		}
		return out, nil
	}
	unserved := []string{"foreign", "missing-class", "classless"}
	checkUnserved := func(when string) {
		for _, name := range unserved {
			got, err := ingStatus(f.Ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 0 {
				t.Errorf("%s, Ingress %s, which baregate does not serve, has status addresses %v", when, name, got)
			}
		}
	}
	start := time.Now()
	f.WaitFor(time.Minute, "the served Ingress to get the address "+ip, func(ctx context.Context) (bool, error) {
		got, err := ingStatus(ctx, "served")
		return slices.Equal(got, []string{ip}), fmt.Errorf("status addresses %v (%w)", got, err)
	})
	t.Logf("the served Ingress got its status after %s", time.Since(start).Round(100*time.Millisecond))
	checkUnserved("once the served Ingress had its status")
	// The status writer runs again on every change: give it several rounds, including a change of
	// the unserved Ingresses themselves, before concluding it leaves them alone.
	for _, name := range unserved {
		patch := `{"metadata":{"labels":{"touched":"yes"}}}`
		if _, err := f.Client().NetworkingV1().Ingresses(ns).Patch(f.Ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !t.Failed() {
		time.Sleep(500 * time.Millisecond)
		checkUnserved("within 5 s of a change")
	}
	if got, err := ingStatus(f.Ctx, "served"); err != nil || !slices.Equal(got, []string{ip}) {
		t.Errorf("the served Ingress's status changed to %v (%v); want [%s]", got, err, ip)
	}
}

// ingressFrontDoor installs for one test what the chart installs for the ingress: an IngressClass of
// baregate's controller, and the gateway's default ingress Service (baregate-system/baregate-ingress)
// exposing the gateways' HTTP and HTTPS ports on an LB IP from a pool of its own (eTP Local, as the
// chart's). It returns the class's name and the Service's IP.
func ingressFrontDoor(t testing.TB, f *framework.T, ns, addresses string) (class, ip string) {
	pool := addPool(t, f, ns, addresses)
	class = f.AddIngressClass(ns+"-class", "baregate.io/ingress")
	f.Apply(lab.GatewayNamespace, fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata:
  name: %s
  annotations: {metallb.io/address-pool: %s}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {%s: %s}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: https, port: 443, targetPort: https}
`, ingressServiceName, pool, lab.GatewayAppLabel, lab.GatewayApp))
	t.Cleanup(func() {
		_ = f.Client().CoreV1().Services(lab.GatewayNamespace).Delete(context.Background(), ingressServiceName, metav1.DeleteOptions{})
	})
	first, last, _ := strings.Cut(addresses, "-")
	return class, waitServiceIP(t, f, lab.GatewayNamespace, ingressServiceName, first, last)
}

// echoBehindIngress runs n echo pods behind Service echo and an Ingress (named like the host's first
// label) for host on the ingress Service's LB IP, from the addresses given; it returns the IP and the
// pods once client1 gets answers.
func echoBehindIngress(t testing.TB, f *framework.T, ns, host string, n int, addresses string) (ip string, pods []string) {
	class, ip := ingressFrontDoor(t, f, ns, addresses)
	name, _, _ := strings.Cut(host, ".")
	f.Apply(ns, framework.EchoApp("echo", n, name)+framework.Service("echo", "ClusterIP", "app: echo", "", "")+ingress(name, class, host, ""))
	pods = podNames(f.WaitPodsReady(ns, "app=echo", n))
	f.WaitReadyEndpoints(ns, "echo", n)
	waitEcho(t, f, newIngressClient(t, f, ip, nil), "http://"+host+"/")
	return ip, pods
}

// ingress is an Ingress of class (none when empty) routing every path of host to Service echo's
// port http, over TLS with the named Secret when secret is set.
func ingress(name, class, host, secret string) string {
	m := fmt.Sprintf("\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: %s\nspec:\n", name)
	if class != "" {
		m += "  ingressClassName: " + class + "\n"
	}
	if secret != "" {
		m += fmt.Sprintf("  tls:\n  - hosts: [%s]\n    secretName: %s\n", host, secret)
	}
	return m + fmt.Sprintf(`  rules:
  - host: %s
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: echo
            port: {name: http}
`, host)
}

// testCA is a certificate authority of the test's own, which the client trusts.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	leaf map[string]*x509.Certificate // by host
}

func newTestCA(t testing.TB) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "baregate e2e test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, leaf: map[string]*x509.Certificate{}}
}

// tlsSecret is a kubernetes.io/tls Secret with a certificate for host that the CA signed, valid for
// 90 days as an ACME CA's are.
func (ca *testCA) tlsSecret(t testing.TB, name, host string) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.leaf[host], err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(typ string, der []byte) string {
		return fmt.Sprintf("%q", pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	// JSON strings are YAML strings, and stringData takes the PEM text as it is.
	return fmt.Sprintf("\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: %s\n  tls.key: %s\n",
		name, b64("CERTIFICATE", der), b64("EC PRIVATE KEY", keyDER))
}

// ingressClient sends requests from client1's namespace to one IP, whatever host the URL names (as
// curl --resolve does), trusting the given roots for HTTPS.
type ingressClient struct{ *http.Client }

func newIngressClient(t testing.TB, f *framework.T, ip string, roots *x509.CertPool) ingressClient {
	dial := lab.DialContextIn(f.ClientNetns(1))
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return dial(ctx, network, net.JoinHostPort(ip, port))
		},
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return ingressClient{&http.Client{Transport: tr, Timeout: 10 * time.Second,
		// Redirects are answers the tests check, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// getEcho GETs url and decodes the echo answer; anything but 200 is an error.
func (c ingressClient) getEcho(ctx context.Context, url string) (echo.Response, *http.Response, error) {
	var r echo.Response
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return r, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return r, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return r, resp, fmt.Errorf("reading the answer of %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return r, resp, fmt.Errorf("%s answered %s: %q", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, resp, fmt.Errorf("%s answered no echo JSON: %q", url, body)
	}
	return r, resp, nil
}

// waitEcho waits until url answers with echo JSON: a new route or IP takes a moment to be in force.
func waitEcho(t testing.TB, f *framework.T, c ingressClient, url string) {
	start := time.Now()
	f.WaitFor(time.Minute, "an echo answer from "+url, func(ctx context.Context) (bool, error) {
		_, _, err := c.getEcho(ctx, url)
		return err == nil, err
	})
	t.Logf("%s answered after %s", url, time.Since(start).Round(100*time.Millisecond))
}

// load is a few clients sending GETs back to back, each on its own keep-alive connection, until stop.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	st     loadStats
}

type loadStats struct {
	requests, status5xx, otherStatus, connErrors int
	firstErrors                                  []string
	pods                                         map[string]int
}

func (s loadStats) fromOld(old []string) int {
	n := 0
	for p := range s.pods {
		if slices.Contains(old, p) {
			n++
		}
	}
	return n
}

func startLoad(t testing.TB, f *framework.T, ip, url string, clients int) *load {
	ctx, cancel := context.WithCancel(f.Ctx)
	var stopping atomic.Bool
	l := &load{cancel: func() { stopping.Store(true); cancel() }, st: loadStats{pods: map[string]int{}}}
	for range clients {
		c := newIngressClient(t, f, ip, nil)
		l.wg.Go(func() {
			for ctx.Err() == nil {
				r, resp, err := c.getEcho(ctx, url)
				if ctx.Err() != nil && stopping.Load() {
					return // cut by stop, not by the gateway
				}
				l.record(r, resp, err)
			}
		})
	}
	return l
}

func (l *load) record(r echo.Response, resp *http.Response, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.requests++
	switch {
	case err == nil:
		l.st.pods[r.Pod]++
		return
	case resp == nil:
		l.st.connErrors++
	case resp.StatusCode >= 500:
		l.st.status5xx++
	default:
		l.st.otherStatus++
	}
	if len(l.st.firstErrors) < 5 {
		l.st.firstErrors = append(l.st.firstErrors, time.Now().Format("15:04:05.000")+" "+err.Error())
	}
}

func (l *load) stop() loadStats {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// waitRolledOut waits until the Deployment runs only pods of its new template, all Ready, and none of
// the old pods is left, even terminating.
func waitRolledOut(t testing.TB, f *framework.T, ns, name string, old []string) {
	f.WaitFor(3*time.Minute, "Deployment "+ns+"/"+name+" to roll out", func(ctx context.Context) (bool, error) {
		d, err := f.Client().AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if !deploymentDone(d) {
			return false, fmt.Errorf("status %+v", d.Status)
		}
		pods, err := f.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if slices.Contains(old, p.Name) {
				return false, fmt.Errorf("old pod %s is still there", p.Name)
			}
		}
		return true, nil
	})
}

func deploymentDone(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want &&
		s.ReadyReplicas == want && s.AvailableReplicas == want
}
