package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/lab/echo"
	"github.com/baregate/baregate/test/e2e/framework"
)

// nginxManifests are real-world ingress-nginx manifests (the ingress-nginx documentation's examples
// and common patterns), applied exactly as written: class nginx, their own namespaces.
var nginxManifests = []string{"rewrite.yaml", "canary.yaml", "auth.yaml", "cors.yaml", "redirect.yaml"}

// nginxBackends are the Services those manifests name, by namespace; each gets echo pods (canaries
// their own).
var nginxBackends = map[string][]string{
	"default":     {"http-svc", "api"},
	"web":         {"unused", "checkout", "web", "error-pages", "api", "assets"},
	"echo":        {"production", "canary", "canary-eu"},
	"kube-system": {"kubernetes-dashboard"},
}

// TestNginxAnnotationManifests serves the ingress-nginx manifests of ingress/annotations/testdata
// unchanged, with an IngressClass "nginx" of baregate's controller, and checks through the ingress
// Service's LB IP from client1 what each one promises: rewrites, canary by header and weight, basic
// auth from Secrets, forward auth failing closed, CORS preflights, permanent/temporal redirects,
// app-root, redirect to HTTPS and server aliases.
func TestNginxAnnotationManifests(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	_, ip := ingressFrontDoor(t, f, ns, "203.0.113.244-203.0.113.245")
	f.AddIngressClass("nginx", "baregate.io/ingress")
	for bns, svcs := range nginxBackends {
		ensureNamespace(t, f, bns)
		m := framework.EchoApp("echo-nginx", 1, "")
		for _, s := range svcs {
			sel := "app: echo-nginx"
			if strings.HasPrefix(s, "canary") {
				sel = "app: canary-nginx"
			}
			m += framework.Service(s, "ClusterIP", sel, "", "")
		}
		if bns == "echo" {
			m += "\n---" + framework.EchoApp("canary-nginx", 1, "")
		}
		f.Apply(bns, m)
		cleanupObjects(t, f, bns, svcs)
	}
	for _, file := range nginxManifests {
		b, err := os.ReadFile("../../ingress/annotations/testdata/" + file)
		if err != nil {
			t.Fatal(err)
		}
		f.Apply("default", string(b))
	}
	f.WaitReadyEndpoints("default", "http-svc", 1)
	f.WaitReadyEndpoints("echo", "production", 1)
	f.WaitReadyEndpoints("echo", "canary", 1)
	f.WaitReadyEndpoints("web", "api", 1)
	c := newIngressClient(t, f, ip, nil)
	waitEcho(t, f, c, "http://rewrite.bar.com/something/")

	// rewrite.yaml
	r := mustEcho(t, f, c, "http://rewrite.bar.com/something/new?x=1")
	if r.Path != "/new?x=1" && r.Path != "/new" {
		t.Errorf("rewrite: the pod saw path %q, want /new", r.Path)
	}
	r = mustEcho(t, f, c, "http://api.example.com/api/users")
	if !strings.HasPrefix(r.Path, "/users") || r.Headers.Get("X-Forwarded-Prefix") != "/api" {
		t.Errorf("api rewrite: path %q, X-Forwarded-Prefix %q", r.Path, r.Headers.Get("X-Forwarded-Prefix"))
	}
	expectAnswer(t, f, c, "GET", "http://approot.bar.com/", nil, 302, "Location", "http://approot.bar.com/app1")

	// canary.yaml: the header decides, then 10% by weight; canary-region is a second canary of the
	// same route, which ingress-nginx does not support either: its header does nothing.
	for range 5 {
		if r := mustEcho(t, f, c, "http://echo.example.com/", "X-Canary", "always"); !strings.HasPrefix(r.Pod, "canary-nginx") {
			t.Fatalf("X-Canary: always went to %s", r.Pod)
		}
		if r := mustEcho(t, f, c, "http://echo.example.com/", "X-Canary", "never"); !strings.HasPrefix(r.Pod, "echo-nginx") {
			t.Fatalf("X-Canary: never went to %s", r.Pod)
		}
	}
	canaries := 0
	const n = 300
	for range n {
		if r := mustEcho(t, f, c, "http://echo.example.com/"); strings.HasPrefix(r.Pod, "canary-nginx") {
			canaries++
		}
	}
	t.Logf("canary-weight 10: %d of %d requests went to the canary", canaries, n)
	if canaries < 8 || canaries > 60 { // mean 30, sd 5.2
		t.Errorf("canary-weight 10: %d of %d requests went to the canary", canaries, n)
	}

	// auth.yaml: basic auth from both Secret layouts (foo / password); the oauth2-proxy example's
	// auth service does not exist here, so its Ingress fails closed.
	expectAnswer(t, f, c, "GET", "http://foo.bar.com/", nil, 401, "WWW-Authenticate", `Basic realm="Authentication Required - foo"`)
	for _, host := range []string{"foo.bar.com", "map.bar.com"} {
		expectAnswer(t, f, c, "GET", "http://"+host+"/", []string{"Authorization", basicAuth("foo", "password")}, 200, "", "")
		expectAnswer(t, f, c, "GET", "http://"+host+"/", []string{"Authorization", basicAuth("foo", "wrong")}, 401, "", "")
	}
	// The dashboard host is listed in spec.tls (its Secret is missing: the default certificate
	// serves it), so plain HTTP is redirected first, as ingress-nginx does.
	expectAnswer(t, f, c, "GET", "http://dashboard.example.com/", nil, 308, "Location", "https://dashboard.example.com/")
	insecure := newIngressClient(t, f, ip, nil)
	insecure.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
	expectAnswer(t, f, insecure, "GET", "https://dashboard.example.com/", nil, 500, "", "")

	// cors.yaml
	expectAnswer(t, f, c, "OPTIONS", "http://api.example.com/v1/items", []string{"Origin", "https://pr-1.preview.example.com", "Access-Control-Request-Method", "PUT"},
		204, "Access-Control-Allow-Origin", "https://pr-1.preview.example.com")
	expectAnswer(t, f, c, "GET", "http://cdn.example.com/logo.png", []string{"Origin", "https://anyone.example"}, 200, "Access-Control-Allow-Origin", "https://anyone.example")

	// redirect.yaml
	expectAnswer(t, f, c, "GET", "http://old.example.org/docs/a?b=c", nil, 308, "Location", "https://www.example.com/docs/a?b=c")
	expectAnswer(t, f, c, "GET", "http://shop.example.com/checkout/cart", nil, 302, "Location", "https://status.example.com/")
	expectAnswer(t, f, c, "GET", "http://www.example.com/x", nil, 308, "Location", "https://www.example.com/x")
	expectAnswer(t, f, c, "GET", "http://example.net/x", nil, 308, "Location", "https://example.net/x")
	expectAnswer(t, f, c, "GET", "http://example.com/x", nil, 308, "Location", "http://www.example.com/x")
}

// ensureNamespace creates a namespace the manifests name unless it exists, removing it at the end
// if the test made it.
func ensureNamespace(t *testing.T, f *framework.T, name string) {
	cs := f.Client()
	_, err := cs.CoreV1().Namespaces().Create(f.Ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return
	}
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	f.WaitFor(time.Minute, "the default ServiceAccount of "+name, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// cleanupObjects removes at the end what the test put into a namespace it may not own.
func cleanupObjects(t *testing.T, f *framework.T, ns string, svcs []string) {
	cs := f.Client()
	t.Cleanup(func() {
		ctx := context.Background()
		for _, s := range svcs {
			_ = cs.CoreV1().Services(ns).Delete(ctx, s, metav1.DeleteOptions{})
		}
		for _, d := range []string{"echo-nginx", "canary-nginx"} {
			_ = cs.AppsV1().Deployments(ns).Delete(ctx, d, metav1.DeleteOptions{})
		}
		ings, _ := cs.NetworkingV1().Ingresses(ns).List(ctx, metav1.ListOptions{})
		for _, ing := range ings.Items {
			if ing.Spec.IngressClassName != nil && *ing.Spec.IngressClassName == "nginx" {
				_ = cs.NetworkingV1().Ingresses(ns).Delete(ctx, ing.Name, metav1.DeleteOptions{})
			}
		}
		for _, s := range []string{"basic-auth", "basic-auth-map"} {
			_ = cs.CoreV1().Secrets(ns).Delete(ctx, s, metav1.DeleteOptions{})
		}
	})
}

func basicAuth(user, pw string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, pw)
	return r.Header.Get("Authorization")
}

// do sends one request through the client; hdr are "Name", "value" pairs.
func (c ingressClient) do(ctx context.Context, method, u string, hdr []string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// expectAnswer waits (a route change takes a moment) until a request gets status want and, when
// header is set, that header value.
func expectAnswer(t *testing.T, f *framework.T, c ingressClient, method, u string, hdr []string, want int, header, value string) {
	t.Helper()
	f.WaitFor(30*time.Second, fmt.Sprintf("%s %s to answer %d %s %s", method, u, want, header, value), func(ctx context.Context) (bool, error) {
		resp, body, err := c.do(ctx, method, u, hdr)
		if err != nil {
			return false, err
		}
		got := ""
		if header != "" {
			got = resp.Header.Get(header)
		}
		return resp.StatusCode == want && got == value, fmt.Errorf("answered %d, %s %q: %q", resp.StatusCode, header, got, body)
	})
}

// mustEcho GETs u and returns the echo answer, waiting briefly for the route to be in force.
func mustEcho(t *testing.T, f *framework.T, c ingressClient, u string, hdr ...string) echo.Response {
	t.Helper()
	var r echo.Response
	f.WaitFor(30*time.Second, "an echo answer from "+u, func(ctx context.Context) (bool, error) {
		resp, body, err := c.do(ctx, "GET", u, hdr)
		if err != nil {
			return false, err
		}
		if resp.StatusCode != 200 {
			return false, fmt.Errorf("answered %d: %q", resp.StatusCode, body)
		}
		return json.Unmarshal(body, &r) == nil, fmt.Errorf("no echo JSON: %q", body)
	})
	return r
}
