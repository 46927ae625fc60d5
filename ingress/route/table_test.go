package route

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/internal/cluster"
)

// served builds a snapshot in which every Service named in the Ingresses exists with one ready endpoint.
func served(ings ...*networkingv1.Ingress) *cluster.Snapshot {
	in := cluster.Inputs{Ingresses: ings}
	seen := map[string]bool{}
	add := func(be *networkingv1.IngressBackend) {
		if be == nil || be.Service == nil || seen[be.Service.Name] {
			return
		}
		seen[be.Service.Name] = true
		n := len(seen)
		in.Services = append(in.Services, fx.Service(be.Service.Name, be.Service.Port.Number))
		in.EndpointSlices = append(in.EndpointSlices, fx.Slice(be.Service.Name, be.Service.Name+"-1", fx.EP{Addr: fmt.Sprintf("198.18.0.%d:8080", n), Node: "node1"}))
	}
	for _, ing := range ings {
		add(ing.Spec.DefaultBackend)
		for _, r := range ing.Spec.Rules {
			if r.HTTP != nil {
				for i := range r.HTTP.Paths {
					add(&r.HTTP.Paths[i].Backend)
				}
			}
		}
	}
	return fx.Snapshot(in)
}

func serviceOf(r *Route) string {
	if r == nil {
		return "404"
	}
	return r.Backend.Service.Name
}

// TestPathMatchingFromIngressDocs is the "Examples" table of the Kubernetes Ingress documentation
// (concepts/services-networking/ingress, "Path types" / "Examples"), row by row. Each path of a row
// routes to its own Service, named after the path; "404" means the request falls to the default
// backend (there is none here).
func TestPathMatchingFromIngressDocs(t *testing.T) {
	type p struct{ typ, path string }
	cases := []struct {
		paths   []p
		request string
		want    string
	}{
		{[]p{{"Prefix", "/"}}, "/", "prefix:/"},
		{[]p{{"Prefix", "/"}}, "/anything/at/all", "prefix:/"},
		{[]p{{"Exact", "/foo"}}, "/foo", "exact:/foo"},
		{[]p{{"Exact", "/foo"}}, "/bar", "404"},
		{[]p{{"Exact", "/foo"}}, "/foo/", "404"},
		{[]p{{"Exact", "/foo/"}}, "/foo", "404"},
		{[]p{{"Prefix", "/foo"}}, "/foo", "prefix:/foo"},
		{[]p{{"Prefix", "/foo"}}, "/foo/", "prefix:/foo"},
		{[]p{{"Prefix", "/foo/"}}, "/foo", "prefix:/foo/"},
		{[]p{{"Prefix", "/foo/"}}, "/foo/", "prefix:/foo/"},
		{[]p{{"Prefix", "/aaa/bb"}}, "/aaa/bbb", "404"},
		{[]p{{"Prefix", "/aaa/bbb"}}, "/aaa/bbb", "prefix:/aaa/bbb"},
		{[]p{{"Prefix", "/aaa/bbb/"}}, "/aaa/bbb", "prefix:/aaa/bbb/"},   // ignores trailing slash
		{[]p{{"Prefix", "/aaa/bbb"}}, "/aaa/bbb/", "prefix:/aaa/bbb"},    // matches trailing slash
		{[]p{{"Prefix", "/aaa/bbb"}}, "/aaa/bbb/ccc", "prefix:/aaa/bbb"}, // matches subpath
		{[]p{{"Prefix", "/aaa/bbb"}}, "/aaa/bbbxyz", "404"},              // not a string prefix
		{[]p{{"Prefix", "/"}, {"Prefix", "/aaa"}}, "/aaa/ccc", "prefix:/aaa"},
		{[]p{{"Prefix", "/"}, {"Prefix", "/aaa"}, {"Prefix", "/aaa/bbb"}}, "/aaa/bbb", "prefix:/aaa/bbb"},
		{[]p{{"Prefix", "/"}, {"Prefix", "/aaa"}, {"Prefix", "/aaa/bbb"}}, "/ccc", "prefix:/"},
		{[]p{{"Prefix", "/aaa"}}, "/ccc", "404"},
		{[]p{{"Prefix", "/foo"}, {"Exact", "/foo"}}, "/foo", "exact:/foo"},
		{[]p{{"Exact", "/foo"}, {"Prefix", "/foo"}}, "/foo", "exact:/foo"},
		// Beyond the docs' table: case sensitivity and ImplementationSpecific (= Prefix here).
		{[]p{{"Exact", "/foo"}}, "/FOO", "404"},
		{[]p{{"Prefix", "/foo"}}, "/Foo/bar", "404"},
		{[]p{{"ImplementationSpecific", "/foo"}}, "/foo/bar", "implementationspecific:/foo"},
		{[]p{{"ImplementationSpecific", "/foo"}}, "/foobar", "404"},
		{[]p{{"", "/foo"}}, "/foo/x", "implementationspecific:/foo"},
		// Longest match wins over order, and Exact only on the whole path.
		{[]p{{"Prefix", "/a/b/c"}, {"Prefix", "/a"}}, "/a/b/c/d", "prefix:/a/b/c"},
		{[]p{{"Exact", "/a/b"}, {"Prefix", "/a"}}, "/a/b/c", "prefix:/a"},
		{[]p{{"Prefix", "/a/"}, {"Exact", "/a/"}}, "/a/", "exact:/a/"},
		{[]p{{"Prefix", "/a/"}, {"Exact", "/a/"}}, "/a", "prefix:/a/"},
		{[]p{{"Prefix", "/"}}, "", "prefix:/"},
	}
	for _, c := range cases {
		var paths []networkingv1.HTTPIngressPath
		var desc []string
		for _, pp := range c.paths {
			typ := pp.typ
			if typ == "" {
				typ = "ImplementationSpecific"
			}
			name := strings.ToLower(typ) + ":" + pp.path
			svcName := strings.NewReplacer("/", "-", ":", "-").Replace(name)
			paths = append(paths, fx.Path(pp.typ, pp.path, fx.Backend(svcName, 80)))
			desc = append(desc, pp.typ+" "+pp.path)
		}
		tbl, problems := Build(served(fx.Ingress("paths", 0, fx.Rule("", paths...))))
		if len(problems) != 0 {
			t.Fatalf("%v: unexpected problems %v", desc, problems)
		}
		got := serviceOf(tbl.Match("example.com", c.request))
		want := strings.NewReplacer("/", "-", ":", "-").Replace(c.want)
		if got != want {
			t.Errorf("paths %v, request %q: routed to %s, want %s", desc, c.request, got, want)
		}
	}
}

// TestHostMatching covers the documentation's wildcard table and the Host header forms clients send.
func TestHostMatching(t *testing.T) {
	ing := fx.Ingress("hosts", 0,
		fx.Rule("foo.bar.com", fx.Path("Prefix", "/", fx.Backend("exact", 80))),
		fx.Rule("*.foo.com", fx.Path("Prefix", "/", fx.Backend("wild", 80))),
		fx.Rule("bar.foo.com", fx.Path("Prefix", "/only", fx.Backend("exact-bar", 80))),
		fx.Rule("", fx.Path("Prefix", "/any", fx.Backend("anyhost", 80))),
		fx.Rule("[2001:db8::1]", fx.Path("Prefix", "/", fx.Backend("never", 80))),
	)
	tbl, problems := Build(served(ing))
	if len(problems) != 1 || problems[0].Reason != "InvalidHost" {
		t.Errorf("want exactly one InvalidHost problem for the IPv6 literal host, got %v", problems)
	}
	cases := []struct{ host, path, want string }{
		{"foo.bar.com", "/", "exact"},
		{"FOO.Bar.COM", "/x", "exact"},     // hosts are case-insensitive
		{"foo.bar.com:8080", "/", "exact"}, // a port in the Host header is ignored
		{"foo.bar.com.", "/", "exact"},     // so is a final dot
		{"bar.foo.com", "/x", "wild"},      // docs: matches based on shared suffix
		{"baz.bar.foo.com", "/x", "404"},   // docs: wildcard covers a single label only
		{"foo.com", "/x", "404"},           // docs: no match, wildcard needs a label
		{".foo.com", "/x", "404"},
		{"bar.foo.com", "/only/x", "exact-bar"}, // exact beats wildcard
		{"bar.foo.com", "/other", "wild"},       // the exact host has no such path: the wildcard's rules apply
		{"other.com", "/any/1", "anyhost"},
		{"foo.bar.com", "/any", "exact"},
		{"baz.bar.foo.com", "/any", "anyhost"},
		{"", "/any", "anyhost"},
		{"[2001:db8::1]:443", "/any", "anyhost"},
		{"other.com", "/", "404"},
	}
	for _, c := range cases {
		if got := serviceOf(tbl.Match(c.host, c.path)); got != c.want {
			t.Errorf("Host %q path %q: routed to %s, want %s", c.host, c.path, got, c.want)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM:80": "example.com", "[2001:DB8::1]:443": "2001:db8::1", "2001:db8::1": "2001:db8::1",
		"192.0.2.1:8080": "192.0.2.1", "a.b.": "a.b", "": "", "[::1]": "::1",
	} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDefaultBackend(t *testing.T) {
	old := fx.Ingress("old", 10, fx.Default("fallback", 80), fx.Rule("a.example.com", fx.Path("Exact", "/x", fx.Backend("a", 80))))
	young := fx.Ingress("young", 1, fx.Default("other-fallback", 80))
	tbl, problems := Build(served(old, young))
	if got := serviceOf(tbl.Match("a.example.com", "/y")); got != "fallback" {
		t.Errorf("unmatched path routed to %s, want the default backend", got)
	}
	if got := serviceOf(tbl.Match("a.example.com", "/x")); got != "a" {
		t.Errorf("matched path routed to %s", got)
	}
	if len(problems) != 1 || problems[0].Ingress != young || problems[0].Reason != "DefaultBackendConflict" {
		t.Errorf("want one DefaultBackendConflict on the younger Ingress, got %v", problems)
	}
}

// TestMerge: rules of several Ingresses for one host merge, as cert-manager's HTTP-01 solver needs.
func TestMerge(t *testing.T) {
	app := fx.Ingress("app", 100, fx.Rule("shop.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))))
	solver := fx.Ingress("cm-acme-http-solver-x", 1, fx.Rule("shop.example.com",
		fx.Path("ImplementationSpecific", "/.well-known/acme-challenge/tok", fx.Backend("solver", 8089))))
	tbl, problems := Build(served(app, solver))
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	if got := serviceOf(tbl.Match("shop.example.com", "/.well-known/acme-challenge/tok")); got != "solver" {
		t.Errorf("challenge routed to %s", got)
	}
	if got := serviceOf(tbl.Match("shop.example.com", "/cart")); got != "web" {
		t.Errorf("app path routed to %s", got)
	}
}

// TestConflict: the oldest Ingress keeps a contested path, whatever the input order; the younger
// gets a Problem and keeps its other routes.
func TestConflict(t *testing.T) {
	older := fx.Ingress("older", 50, fx.Rule("x.example.com", fx.Path("Prefix", "/api", fx.Backend("old-api", 80))))
	younger := fx.Ingress("younger", 5, fx.Rule("x.example.com",
		fx.Path("Prefix", "/api/", fx.Backend("new-api", 80)), // same element-wise prefix as /api
		fx.Path("Exact", "/api", fx.Backend("new-exact", 80)), // a different path type: no conflict
		fx.Path("Prefix", "/web", fx.Backend("new-web", 80))))
	for _, order := range [][]*networkingv1.Ingress{{older, younger}, {younger, older}} {
		tbl, problems := Build(served(order...))
		if got := serviceOf(tbl.Match("x.example.com", "/api/v1")); got != "old-api" {
			t.Errorf("contested path routed to %s, want the oldest Ingress's", got)
		}
		if got := serviceOf(tbl.Match("x.example.com", "/api")); got != "new-exact" {
			t.Errorf("exact path routed to %s", got)
		}
		if got := serviceOf(tbl.Match("x.example.com", "/web")); got != "new-web" {
			t.Errorf("loser's other route routed to %s", got)
		}
		if len(problems) != 1 || problems[0].Ingress != younger || problems[0].Reason != "RouteConflict" {
			t.Errorf("want one RouteConflict on the younger Ingress, got %v", problems)
		}
	}
}

// TestBadInputStaysLocal: each kind of bad input is a Problem on its own Ingress, and the good
// Ingress's routes are unaffected.
func TestBadInputStaysLocal(t *testing.T) {
	good := fx.Ingress("good", 100, fx.Rule("good.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))))
	cases := []struct {
		name   string
		ing    *networkingv1.Ingress
		reason string
	}{
		{"missing service", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("Prefix", "/", fx.Backend("nope", 80)))), "ServiceNotFound"},
		{"missing port", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("Prefix", "/", fx.Backend("web", 81)))), "ServicePortNotFound"},
		{"missing port name", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("Prefix", "/", fx.NamedBackend("web", "grpc")))), "ServicePortNotFound"},
		{"relative path", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("Prefix", "api", fx.Backend("web", 80)))), "InvalidPath"},
		{"regex path", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("ImplementationSpecific", "/api(/|$)(.*)", fx.Backend("web", 80)))), "InvalidPath"},
		{"query in path", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("Exact", "/a?b", fx.Backend("web", 80)))), "InvalidPath"},
		{"unknown path type", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("Regex", "/a", fx.Backend("web", 80)))), "InvalidPath"},
		{"bad host", fx.Ingress("bad", 1, fx.Rule("foo.*.com", fx.Path("Prefix", "/", fx.Backend("web", 80)))), "InvalidHost"},
		{"resource backend", fx.Ingress("bad", 1, fx.Rule("bad.example.com", fx.Path("Prefix", "/", networkingv1.IngressBackend{
			Resource: &corev1.TypedLocalObjectReference{Kind: "StorageBucket", Name: "static"}}))), "UnsupportedBackend"},
		{"missing secret", fx.Ingress("bad", 1, fx.TLS("nope", "bad.example.com")), "SecretNotFound"},
		{"secret without certificate", fx.Ingress("bad", 1, fx.TLS("opaque", "bad.example.com")), "InvalidCertificate"},
		{"secret with garbage", fx.Ingress("bad", 1, fx.TLS("garbage", "bad.example.com")), "InvalidCertificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := cluster.Inputs{
				Ingresses:      []*networkingv1.Ingress{good, c.ing},
				Services:       []*corev1.Service{fx.Service("web", 80)},
				EndpointSlices: []*discoveryv1.EndpointSlice{fx.Slice("web", "web-1", fx.EP{Addr: "198.18.0.1:8080", Node: "node1"})},
				Secrets: []*corev1.Secret{
					{ObjectMeta: fx.TLSSecret("opaque", nil, nil).ObjectMeta, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("x")}},
					fx.TLSSecret("garbage", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte("nope")),
				},
			}
			tbl, problems := Build(fx.Snapshot(in))
			if len(problems) != 1 || problems[0].Ingress != c.ing || problems[0].Reason != c.reason {
				t.Fatalf("want one %s problem on the bad Ingress, got %v", c.reason, problems)
			}
			r := tbl.Match("good.example.com", "/x")
			if serviceOf(r) != "web" || len(r.Backend.Endpoints) != 1 {
				t.Errorf("good route disturbed: %+v", r)
			}
			if r := tbl.Match("bad.example.com", "/"); r != nil && len(r.Backend.Endpoints) != 0 {
				t.Errorf("bad route has endpoints: %+v", r.Backend)
			}
		})
	}
}

// TestBackendResolution: numbered and named Service ports resolve to each endpoint's target port,
// appProtocol selects h2c, and one Service port is one shared Backend.
func TestBackendResolution(t *testing.T) {
	svc := fx.Service("api", 80, func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP, AppProtocol: ptr("kubernetes.io/h2c")})
	})
	httpSlice := fx.Slice("api", "api-1", fx.EP{Addr: "198.18.0.2:8080", Node: "node1"}, fx.EP{Addr: "198.18.0.1:8080", Node: "node2"})
	grpcSlice := fx.Slice("api", "api-2", fx.EP{Addr: "198.18.0.3:50051", Node: "node1"})
	grpcSlice.Ports[0].Name = ptr("grpc")
	ingA := fx.Ingress("a", 2, fx.Rule("a.example.com",
		fx.Path("Prefix", "/", fx.Backend("api", 80)),
		fx.Path("Prefix", "/named", fx.NamedBackend("api", "http")),
		fx.Path("Prefix", "/grpc", fx.Backend("api", 9000))))
	ingB := fx.Ingress("b", 1, fx.Rule("b.example.com", fx.Path("Prefix", "/", fx.Backend("api", 80))))
	tbl, problems := Build(fx.Snapshot(cluster.Inputs{
		Ingresses: []*networkingv1.Ingress{ingA, ingB}, Services: []*corev1.Service{svc},
		EndpointSlices: []*discoveryv1.EndpointSlice{httpSlice, grpcSlice},
	}))
	if len(problems) != 0 {
		t.Fatal(problems)
	}
	num, named, grpc := tbl.Match("a.example.com", "/"), tbl.Match("a.example.com", "/named"), tbl.Match("a.example.com", "/grpc/x")
	if got := fmt.Sprint(num.Backend.Endpoints); got != "[198.18.0.1:8080 198.18.0.2:8080]" {
		t.Errorf("port 80 endpoints %s", got)
	}
	if num.Backend != tbl.Match("b.example.com", "/").Backend {
		t.Error("the same Service port in two Ingresses should be one Backend (one balancing state)")
	}
	if named.Backend.Key() == num.Backend.Key() || fmt.Sprint(named.Backend.Endpoints) != fmt.Sprint(num.Backend.Endpoints) {
		t.Errorf("named port: %+v", named.Backend)
	}
	if !grpc.Backend.H2C || fmt.Sprint(grpc.Backend.Endpoints) != "[198.18.0.3:50051]" || num.Backend.H2C {
		t.Errorf("grpc port: %+v", grpc.Backend)
	}
	if len(tbl.Backends) != 3 {
		t.Errorf("want 3 distinct backends, got %d", len(tbl.Backends))
	}
}

// TestEndpointChoice: ready endpoints on live nodes first, then the fall-backs in order.
func TestEndpointChoice(t *testing.T) {
	cases := []struct {
		name string
		eps  []fx.EP
		live map[string]bool
		want string
	}{
		{"ready only", []fx.EP{{Addr: "198.18.0.1:80", Node: "n1"}, {Addr: "198.18.0.2:80", Node: "n1", NotReady: true}}, nil, "[198.18.0.1:80]"},
		{"dead node skipped", []fx.EP{{Addr: "198.18.0.1:80", Node: "n1"}, {Addr: "198.18.0.2:80", Node: "n2"}}, map[string]bool{"n2": true}, "[198.18.0.2:80]"},
		{"all dead: keep ready", []fx.EP{{Addr: "198.18.0.1:80", Node: "n1"}}, map[string]bool{"n2": true}, "[198.18.0.1:80]"},
		{"terminating fallback", []fx.EP{{Addr: "198.18.0.1:80", Node: "n1", NotReady: true, Terminating: true}, {Addr: "198.18.0.2:80", Node: "n1", NotReady: true}}, nil, "[198.18.0.1:80]"},
		{"ready beats terminating", []fx.EP{{Addr: "198.18.0.1:80", Node: "n1", NotReady: true, Terminating: true}, {Addr: "198.18.0.3:80", Node: "n1"}}, nil, "[198.18.0.3:80]"},
		{"none", []fx.EP{{Addr: "198.18.0.2:80", Node: "n1", NotReady: true}}, nil, "[]"},
	}
	for _, c := range cases {
		snap := fx.Snapshot(cluster.Inputs{
			Ingresses:      []*networkingv1.Ingress{fx.Ingress("i", 0, fx.Rule("", fx.Path("Prefix", "/", fx.Backend("s", 80))))},
			Services:       []*corev1.Service{fx.Service("s", 80)},
			EndpointSlices: []*discoveryv1.EndpointSlice{fx.Slice("s", "s-1", c.eps...)},
			LiveNodes:      c.live,
		})
		tbl, _ := Build(snap)
		if got := fmt.Sprint(tbl.Match("h", "/").Backend.Endpoints); got != c.want {
			t.Errorf("%s: endpoints %s, want %s", c.name, got, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestClassSelectionInputs: the table routes exactly the Ingresses the snapshot serves: ours by
// ingressClassName or the legacy annotation, class-less ones only when our class is the default,
// never another controller's.
func TestClassSelectionInputs(t *testing.T) {
	byName := fx.Ingress("by-name", 4, fx.Rule("by-name.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))))
	legacy := fx.Ingress("legacy", 3, fx.Rule("legacy.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))), func(i *networkingv1.Ingress) {
		i.Spec.IngressClassName = nil
		i.Annotations = map[string]string{cluster.LegacyIngressClassAnnotation: fx.ClassName}
	})
	classless := fx.Ingress("classless", 2, fx.Rule("classless.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))), func(i *networkingv1.Ingress) {
		i.Spec.IngressClassName = nil
	})
	foreign := fx.Ingress("foreign", 1, fx.Rule("foreign.example.com", fx.Path("Prefix", "/", fx.Backend("web", 80))), func(i *networkingv1.Ingress) {
		i.Spec.IngressClassName = ptr("nginx")
	})
	for _, isDefault := range []bool{false, true} {
		class := fx.Class()
		if isDefault {
			class.Annotations = map[string]string{cluster.DefaultIngressClassAnnotation: "true"}
		}
		snap := cluster.NewSnapshot(1, time.Unix(0, 0), cluster.Inputs{
			Ingresses:      []*networkingv1.Ingress{byName, legacy, classless, foreign},
			IngressClasses: []*networkingv1.IngressClass{class, {ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}}},
			Services:       []*corev1.Service{fx.Service("web", 80)},
		})
		tbl, _ := Build(snap)
		want := map[string]bool{"by-name.example.com": true, "legacy.example.com": true, "classless.example.com": isDefault, "foreign.example.com": false}
		for host, routed := range want {
			if got := tbl.Match(host, "/") != nil; got != routed {
				t.Errorf("default=%v: %s routed=%v, want %v", isDefault, host, got, routed)
			}
		}
	}
}
