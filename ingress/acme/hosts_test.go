package acme

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/baregate/baregate/internal/cluster"
)

func ingress(name string, annotated bool, rules []string, tls ...networkingv1.IngressTLS) *networkingv1.Ingress {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: networkingv1.IngressSpec{TLS: tls}}
	if annotated {
		ing.Annotations = map[string]string{Annotation: "true"}
	}
	for _, h := range rules {
		ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{Host: h})
	}
	return ing
}

func TestHosts(t *testing.T) {
	managed := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "managed", Labels: map[string]string{ManagedLabel: "true"}}}
	users := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "users"}}
	secrets := map[types.NamespacedName]*corev1.Secret{{Namespace: "ns", Name: "managed"}: managed, {Namespace: "ns", Name: "users"}: users}
	tests := []struct {
		name   string
		ings   []*networkingv1.Ingress
		allTLS bool
		want   []string // host=secret@ingress
	}{{
		name: "annotated: rule and tls hosts, tls secretName kept, default name otherwise",
		ings: []*networkingv1.Ingress{ingress("a", true, []string{"Shop.Example.com", "api.example.com"}, networkingv1.IngressTLS{Hosts: []string{"shop.example.com"}, SecretName: "shop-cert"})},
		want: []string{"shop.example.com=shop-cert@a", "api.example.com=api.example.com-tls@a"},
	}, {
		name: "not annotated: nothing, even with tls",
		ings: []*networkingv1.Ingress{ingress("a", false, []string{"shop.example.com"}, networkingv1.IngressTLS{Hosts: []string{"shop.example.com"}})},
	}, {
		name: "never wildcards, IPs, single labels, invalid names or the annotation set to anything but true",
		ings: []*networkingv1.Ingress{
			ingress("a", true, []string{"*.example.com", "192.0.2.1", "localhost", "bad_name.example.com", ""}),
			{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", Annotations: map[string]string{Annotation: "yes"}}, Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "b.example.com"}}}},
		},
	}, {
		name: "the oldest Ingress owns a host",
		ings: []*networkingv1.Ingress{ingress("old", true, []string{"shop.example.com"}), ingress("new", true, []string{"shop.example.com"}, networkingv1.IngressTLS{Hosts: []string{"shop.example.com"}, SecretName: "x"})},
		want: []string{"shop.example.com=shop.example.com-tls@old"},
	}, {
		name:   "all TLS hosts: missing or managed Secrets only, never the user's own",
		allTLS: true,
		ings: []*networkingv1.Ingress{ingress("a", false, []string{"a.example.com", "plain.example.com"},
			networkingv1.IngressTLS{Hosts: []string{"a.example.com"}, SecretName: "missing"},
			networkingv1.IngressTLS{Hosts: []string{"m.example.com"}, SecretName: "managed"},
			networkingv1.IngressTLS{Hosts: []string{"u.example.com"}, SecretName: "users"},
			networkingv1.IngressTLS{Hosts: []string{"n.example.com"}},
		)},
		want: []string{"a.example.com=missing@a", "m.example.com=managed@a", "n.example.com=n.example.com-tls@a"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, h := range Hosts(&cluster.Snapshot{Ingresses: tc.ings, Secrets: secrets}, tc.allTLS) {
				got = append(got, h.Name+"="+h.Secret.Name+"@"+h.Ingress.Name)
				if h.Secret.Namespace != h.Ingress.Namespace {
					t.Errorf("Secret %s not in the Ingress's namespace", h.Secret)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Hosts = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDefaultSecretName(t *testing.T) {
	long := strings.Repeat("abcdefghi.", 25) + "com" // 253 characters
	for _, h := range []string{"shop.example.com", long} {
		if n := DefaultSecretName(h); len(n) > 253 || !strings.HasSuffix(n, "-tls") {
			t.Errorf("DefaultSecretName(%d chars) = %q", len(h), n)
		}
	}
}

// TestHostPolicy checks that nothing but the listed hosts reaches autocert: not other SNI names,
// not the challenge handler for other hosts.
func TestHostPolicy(t *testing.T) {
	m, err := New(Config{DirectoryURL: LetsEncrypt, HTTP01: true, RenewBefore: 720 * time.Hour, RetryInterval: time.Minute},
		cluster.Deps{NodeName: "n", Namespace: "baregate-system", Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	m.Update(&cluster.Snapshot{Ingresses: []*networkingv1.Ingress{ingress("a", true, []string{"shop.example.com"})}})
	for host, want := range map[string]bool{
		"shop.example.com": true, "SHOP.example.com.": true, "shop.example.com:80": true,
		"other.example.com": false, "example.com": false, "": false, "x.shop.example.com": false,
	} {
		if got := m.hostPolicy(context.Background(), host) == nil; got != want {
			t.Errorf("hostPolicy(%q) allows: %v, want %v", host, got, want)
		}
	}
	// Names outside the policy are left to the caller, without any ACME work.
	c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.example.com", SupportedProtos: []string{"acme-tls/1"}})
	if c != nil || err != nil {
		t.Errorf("GetCertificate for a foreign name = %v, %v; want nil, nil", c, err)
	}
	// An ACME host without a certificate yet: nil too (the default certificate is served meanwhile).
	if c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "shop.example.com"}); c != nil || err != nil {
		t.Errorf("GetCertificate before issuance = %v, %v; want nil, nil", c, err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{DirectoryURL: LetsEncrypt, RenewBefore: 720 * time.Hour, RetryInterval: time.Minute}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"http directory": func(c *Config) { c.DirectoryURL = "http://acme.example/dir" },
		"bad email":      func(c *Config) { c.Email = "Admin <admin@example.com>" },
		"missing CA":     func(c *Config) { c.CAFile = "/nonexistent/ca.pem" },
		"short renew":    func(c *Config) { c.RenewBefore = time.Hour },
		"zero retry":     func(c *Config) { c.RetryInterval = 0 },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestDisabled: without a directory the Manager is inert: no host, no API call, no certificate.
func TestDisabled(t *testing.T) {
	client := fake.NewClientset()
	m, err := New(Config{RenewBefore: 720 * time.Hour, RetryInterval: time.Minute}, cluster.Deps{NodeName: "n", Namespace: "baregate-system", Client: client})
	if err != nil {
		t.Fatal(err)
	}
	m.Update(&cluster.Snapshot{Ingresses: []*networkingv1.Ingress{ingress("a", true, []string{"shop.example.com"})}})
	if err := m.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.hostPolicy(context.Background(), "shop.example.com") == nil || len(m.ACMECertificates()) != 0 || len(client.Actions()) != 0 {
		t.Errorf("disabled Manager: policy allows the host, status %v, API actions %v", m.ACMECertificates(), client.Actions())
	}
}

func TestIneligible(t *testing.T) {
	for host, want := range map[string]string{
		"shop.example.com":        "",
		"":                        "",
		"*.example.com":           "wildcard",
		"192.0.2.1":               "IP address",
		"2001:db8::1":             "IP address",
		"[2001:db8::1]":           "IP address",
		"1.2":                     "IP address",
		"localhost":               "single-label",
		"bad_name.example.com":    "not a valid",
		"-x.example.com":          "not a valid",
		"xn--bcher-kva.example.a": "",
	} {
		got := Ineligible(host)
		if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
			t.Errorf("Ineligible(%q) = %q, want %q", host, got, want)
		}
		if Eligible(host) != (host != "" && want == "") {
			t.Errorf("Eligible(%q) = %v", host, Eligible(host))
		}
	}
}

func TestSkippedReportedOncePerChange(t *testing.T) {
	a := ingress("a", true, []string{"*.example.com", "shop.example.com", "localhost", ""},
		networkingv1.IngressTLS{Hosts: []string{"*.Example.com.", "192.0.2.1"}})
	a.UID = "uid-a"
	plain := ingress("plain", false, []string{"*.example.com"}, networkingv1.IngressTLS{Hosts: []string{"*.example.com"}})
	b := ingress("b", true, []string{"*.example.com"})
	b.UID = "uid-b"
	b2 := b.DeepCopy()
	b2.UID = "uid-b2" // deleted and created again: a new object to tell
	names := func(ss []SkippedHost) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Ingress.Name+"/"+s.Name)
		}
		return out
	}
	reported := map[skipKey]bool{}
	for _, step := range []struct {
		name string
		ings []*networkingv1.Ingress
		want []string
	}{
		{"first sight: each bad host of annotated Ingresses once", []*networkingv1.Ingress{a, plain}, []string{"a/*.example.com", "a/192.0.2.1", "a/localhost"}},
		{"same again: nothing", []*networkingv1.Ingress{a, plain}, nil},
		{"another Ingress with the same host", []*networkingv1.Ingress{a, plain, b}, []string{"b/*.example.com"}},
		{"b gone", []*networkingv1.Ingress{a}, nil},
		{"b back: reported again", []*networkingv1.Ingress{a, b}, []string{"b/*.example.com"}},
		{"b recreated", []*networkingv1.Ingress{a, b2}, []string{"b/*.example.com"}},
	} {
		skipped := Skipped(&cluster.Snapshot{Ingresses: step.ings})
		var fresh []SkippedHost
		fresh, reported = newlySkipped(reported, skipped)
		if got := names(fresh); !slices.Equal(got, step.want) {
			t.Errorf("%s: reported %v, want %v", step.name, got, step.want)
		}
		for _, s := range fresh {
			if s.Why == "" {
				t.Errorf("%s: %s without a reason", step.name, s.Name)
			}
		}
	}
}

// TestSkippedEvents runs the leader side: one Warning Event per skipped host and change, none from a
// Manager with ACME off.
func TestSkippedEvents(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	m, err := New(Config{DirectoryURL: LetsEncrypt, HTTP01: true, RenewBefore: 720 * time.Hour, RetryInterval: time.Minute},
		cluster.Deps{NodeName: "n", Namespace: "baregate-system", Client: fake.NewClientset(), Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.RunLeader(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ing := ingress("a", true, []string{"*.example.com", "shop.example.com"})
	snap := &cluster.Snapshot{Ingresses: []*networkingv1.Ingress{ing}}
	m.Update(snap)
	select {
	case ev := <-rec.Events:
		if !strings.HasPrefix(ev, "Warning "+ReasonHostSkipped+" ") || !strings.Contains(ev, `"*.example.com"`) || !strings.Contains(ev, "DNS-01") {
			t.Errorf("event %q", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Event for a wildcard host")
	}
	// Later syncs of the same snapshot report nothing more; a new bad host is reported.
	m.Update(snap)
	m.Update(snap)
	ing2 := ing.DeepCopy()
	ing2.Spec.Rules = append(ing2.Spec.Rules, networkingv1.IngressRule{Host: "192.0.2.7"})
	m.Update(&cluster.Snapshot{Ingresses: []*networkingv1.Ingress{ing2}})
	select {
	case ev := <-rec.Events:
		if !strings.Contains(ev, `"192.0.2.7"`) {
			t.Errorf("event %q, want the one about 192.0.2.7", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Event for a new IP host")
	}
	cancel()
	<-done
	if len(rec.Events) != 0 {
		t.Errorf("more events: %q", <-rec.Events)
	}

	off, err := New(Config{RenewBefore: 720 * time.Hour, RetryInterval: time.Minute}, cluster.Deps{NodeName: "n", Namespace: "baregate-system", Client: fake.NewClientset(), Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	off.Update(snap)
	if err := off.RunLeader(context.Background()); err != nil || len(rec.Events) != 0 {
		t.Errorf("ACME off: RunLeader %v, events %d", err, len(rec.Events))
	}
}
