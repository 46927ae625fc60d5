package ingress

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/internal/cluster"
)

// nginxAnn turns "key", "value" pairs into ingress-nginx annotations.
func nginxAnn(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[annotations.NginxPrefix+kv[i]] = kv[i+1]
	}
	return m
}

// annotated is simple() with annotations on its Ingress, which is named svc.host.
func annotated(host, svc string, ann map[string]string, addrs ...string) cluster.Inputs {
	in := simple(host, svc, addrs...)
	ing := in.Ingresses[0]
	ing.Annotations = ann
	ing.Name = svc + "." + host
	ing.UID = types.UID("uid-" + ing.Name)
	return in
}

// pathIngress routes host and one path (of pathType) to svc, with annotations.
func pathIngress(name string, age int, host, pathType, path, svc string, ann map[string]string) *networkingv1.Ingress {
	ing := fx.Ingress(name, age, fx.Rule(host, fx.Path(pathType, path, fx.Backend(svc, 80))))
	ing.Annotations = ann
	return ing
}

// applyWithSecrets is apply() for Ingresses that read Secrets other than TLS ones (basic auth): the
// snapshot keeps the ones their annotations name, as the gateway's does.
func (h *harness) applyWithSecrets(in cluster.Inputs, secrets ...*corev1.Secret) {
	h.t.Helper()
	in.Secrets = append(in.Secrets, secrets...)
	in.IngressSecretRefs = annotations.SecretRefs
	h.apply(in)
}

// noRedirects is a client that reports redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// send makes a request to the HTTP listener with Host host; hdr are "Name", "value" pairs.
func (h *harness) send(method, host, path string, body io.Reader, hdr ...string) (*http.Response, string) {
	h.t.Helper()
	return h.sendTo(noRedirects, h.httpURL, method, host, path, body, hdr...)
}

func (h *harness) sendTo(c *http.Client, base, method, host, path string, body io.Reader, hdr ...string) (*http.Response, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, strings.TrimSpace(string(b))
}

// problemReasons lists the reasons of the route problems of the Ingress named name.
func (h *harness) problemReasons(name string) []string {
	var out []string
	for _, p := range h.ing.Problems() {
		if p.Ingress.Name == name {
			out = append(out, p.Reason)
		}
	}
	return out
}

// echoPath answers with the request path and a few request headers, for checks of what reached the
// backend.
func echoPath(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Seen-Path", r.URL.RequestURI())
	w.Header().Set("X-Seen-Host", r.Host)
	w.Header().Set("X-Seen-Prefix", r.Header.Get("X-Forwarded-Prefix"))
	w.Header().Set("X-Seen-User", r.Header.Get("X-Auth-User"))
	io.WriteString(w, "ok")
}

func expectStatus(t *testing.T, what string, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Errorf("%s: status %d, want %d", what, resp.StatusCode, want)
	}
}

// startSlowBackend starts a backend whose /slow requests block until release is called (at the
// latest when the test ends), for tests of connection limits; release may be called more than once.
func startSlowBackend(t testing.TB) (*backend, func()) {
	ch := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	be := startBackend(t, "web", false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-ch
		}
	})
	return be, release
}
