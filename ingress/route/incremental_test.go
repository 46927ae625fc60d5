package route

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/ingress/annotations"
	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/ingress/selfsigned"
	"github.com/baregate/baregate/internal/cluster"
)

// TestIncrementalMatchesFullBuild applies random changes to a cluster, makes each snapshot with
// cluster.Builder as the gateway does, and checks that one long-lived Builder (which takes its
// incremental path whenever it can) builds the same table and Problems as a fresh Builder, and
// that no build changes a table handed out before.
func TestIncrementalMatchesFullBuild(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { checkIncremental(t, seed) })
	}
}

func checkIncremental(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	cert, err := selfsigned.New("tls", []string{"tls0.example.com", "*.wild.example.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cb := cluster.NewBuilder("node1", annotations.SecretRefs)
	cb.Set(fx.Class())
	cb.Set(fx.TLSSecret("good", cert.CertPEM, cert.KeyPEM))
	cb.Set(fx.TLSSecret("bad", []byte("not a certificate"), []byte("no key")))
	slice := func(svc string, gen int) *discoveryv1.EndpointSlice {
		var eps []fx.EP
		for j := range gen % 3 { // 0, 1 or 2 endpoints
			eps = append(eps, fx.EP{Addr: fmt.Sprintf("198.18.%d.%d:8080", gen%200, j+1), Node: fmt.Sprint("node", 1+j)})
		}
		return fx.Slice(svc, svc+"-1", eps...)
	}
	for i := range 4 { // svc4 is missing until an operation creates it
		name := fmt.Sprint("svc", i)
		cb.Set(fx.Service(name, 80))
		cb.Set(slice(name, i+1))
	}
	var names []string // live Ingresses
	gen := 0
	newIngress := func(name string, age int) *networkingv1.Ingress {
		svc := fmt.Sprint("svc", rng.IntN(5))
		host := fmt.Sprintf("h%d.example.com", gen)
		var mut []func(*networkingv1.Ingress)
		switch rng.IntN(13) {
		case 0:
			host = fmt.Sprintf("h%d.example.com", rng.IntN(gen+1)) // an existing host, most likely
		case 1:
			host = fmt.Sprintf("*.w%d.example.com", rng.IntN(3))
		case 2:
			host = ""
		case 3: // for its host, a host still to come, or (no hosts) the certificate's names
			tlsHosts := [][]string{{host}, {fmt.Sprintf("h%d.example.com", gen+1)}, nil}[rng.IntN(3)]
			mut = append(mut, fx.TLS([]string{"good", "bad", "missing", ""}[rng.IntN(4)], tlsHosts...))
		case 4:
			mut = append(mut, func(ing *networkingv1.Ingress) {
				ing.Annotations = map[string]string{annotations.NginxPrefix + "proxy-read-timeout": "30"}
			})
		case 5:
			mut = append(mut, func(ing *networkingv1.Ingress) {
				ing.Annotations = map[string]string{annotations.NginxPrefix + "server-alias": fmt.Sprintf("h%d.example.com", gen+1)}
			})
		case 6:
			mut = append(mut, fx.Default(svc, 80))
		case 7:
			mut = append(mut, func(ing *networkingv1.Ingress) { ing.Annotations = map[string]string{"team": "a"} })
		case 8:
			host = "Upper" + host
		case 9: // covered by the wildcard certificate once an Ingress uses it
			host = fmt.Sprintf("h%d.wild.example.com", gen)
		}
		path := []string{"/", "/a", "/a/b", "bad path"}[rng.IntN(4)]
		mut = append(mut, fx.Rule(host, fx.Path([]string{"Prefix", "Exact"}[rng.IntN(2)], path, fx.Backend(svc, 80))))
		return fx.Ingress(name, age, mut...)
	}
	inc := &Builder{}
	var prev *Table
	var prevPrint string
	var incremental, unchanged int
	for step := range 300 {
		gen++
		for range 1 + rng.IntN(2) {
			switch op := rng.IntN(20); {
			case op < 9: // the common case: a new Ingress, newest of all
				name := fmt.Sprint("ing", gen, "-", rng.IntN(1000))
				cb.Set(newIngress(name, -gen))
				names = append(names, name)
			case op < 10: // an Ingress that sorts among the older ones
				name := fmt.Sprint("old", gen)
				cb.Set(newIngress(name, rng.IntN(100)))
				names = append(names, name)
			case op < 12 && len(names) > 0:
				i := rng.IntN(len(names))
				cb.Delete(cluster.KindIngress, types.NamespacedName{Namespace: "default", Name: names[i]})
				names = slices.Delete(names, i, i+1)
			case op < 13 && len(names) > 0:
				cb.Set(newIngress(names[rng.IntN(len(names))], -gen))
			case op < 14:
				svc := fmt.Sprint("svc", rng.IntN(5))
				cb.Set(slice(svc, gen))
			case op < 15:
				cb.Set(fx.Service(fmt.Sprint("svc", rng.IntN(5)), 80))
			case op < 16:
				cb.Delete(cluster.KindService, types.NamespacedName{Namespace: "default", Name: "svc4"})
			case op < 18: // a Service no route uses
				other := fmt.Sprint("other", rng.IntN(5))
				cb.Set(fx.Service(other, 80))
				cb.Set(slice(other, gen))
			case op < 19:
				cb.SetLiveNodes(map[string]bool{"node1": true, "node2": rng.IntN(2) == 0})
			default: // nothing changes
			}
		}
		snap := cb.Build(uint64(step), time.Now())
		got, gotProblems := inc.Build(snap)
		want, wantProblems := (&Builder{}).Build(snap)
		if msg := diffTables(got, want); msg != "" {
			t.Fatalf("step %d: incremental table differs from the full build: %s", step, msg)
		}
		if !reflect.DeepEqual(problemStrings(gotProblems), problemStrings(wantProblems)) {
			t.Fatalf("step %d: problems differ:\nincremental %v\nfull        %v", step, gotProblems, wantProblems)
		}
		if prev != nil {
			if p := tablePrint(prev); p != prevPrint {
				t.Fatalf("step %d: the build changed the previous table:\nbefore %s\nafter  %s", step, prevPrint, p)
			}
			switch {
			case got == prev:
				unchanged++
			case len(prev.Routes) > 0 && len(got.Routes) > len(prev.Routes) && got.Routes[0] == prev.Routes[0]:
				incremental++
			}
		}
		prev, prevPrint = got, tablePrint(got)
	}
	// The comparison is only worth something if both paths ran often.
	if incremental < 30 || unchanged < 5 {
		t.Errorf("incremental builds %d, unchanged %d: the random changes no longer exercise the incremental path", incremental, unchanged)
	}
}

// diffTables compares two tables in full, certificates by the names they serve.
func diffTables(a, b *Table) string {
	ca, cb := certNames(a.Certs), certNames(b.Certs)
	if !reflect.DeepEqual(ca, cb) {
		return fmt.Sprintf("certificates %v != %v", ca, cb)
	}
	x, y := *a, *b
	x.Certs, y.Certs = nil, nil
	if !reflect.DeepEqual(x, y) {
		return fmt.Sprintf("\nincremental %s\nfull        %s", tablePrint(a), tablePrint(b))
	}
	return ""
}

func certNames(c *Certs) map[string]string {
	out := map[string]string{}
	for h, cert := range c.exact {
		out[h] = cert.Leaf.Subject.CommonName
	}
	for h, cert := range c.wildcard {
		out["*."+h] = cert.Leaf.Subject.CommonName
	}
	return out
}

func problemStrings(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// tablePrint renders what a request can observe of a table.
func tablePrint(t *Table) string {
	var sb strings.Builder
	for _, r := range t.Routes {
		fmt.Fprintf(&sb, "%d %s %s %s %s tls=%v be=%d;", r.ID, r.Host, r.PathType, r.Path, r.Ingress, r.TLS, r.Backend.ID)
	}
	for _, be := range t.Backends {
		fmt.Fprintf(&sb, "be%d %s %s %v;", be.ID, be.Service, be.Port, be.Endpoints)
	}
	hosts := func(m map[string]*hostRoutes) []string {
		var out []string
		for h, hr := range m {
			out = append(out, fmt.Sprint(h, len(hr.exact), len(hr.prefix), len(hr.ordered)))
		}
		slices.Sort(out)
		return out
	}
	fmt.Fprintf(&sb, "exact %v wildcard %v", hosts(t.exact), hosts(t.wildcard))
	return sb.String()
}
