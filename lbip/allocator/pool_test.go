package allocator

import (
	"math"
	"net/netip"
	"strings"
	"testing"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
	}{
		{in: "203.0.113.0/24", want: "203.0.113.0-203.0.113.255"},
		{in: "203.0.113.77/24", want: "203.0.113.0-203.0.113.255"},
		{in: " 203.0.113.5 - 203.0.113.9 ", want: "203.0.113.5-203.0.113.9"},
		{in: "203.0.113.5", want: "203.0.113.5-203.0.113.5"},
		{in: "198.18.0.0/15", want: "198.18.0.0-198.19.255.255"},
		{in: "2001:db8:0:2::/64", want: "2001:db8:0:2::-2001:db8:0:2:ffff:ffff:ffff:ffff"},
		{in: "2001:db8::1-2001:db8::10", want: "2001:db8::1-2001:db8::10"},
		{in: "::ffff:203.0.113.1-::ffff:203.0.113.2", want: "203.0.113.1-203.0.113.2"},
		{in: "203.0.113.9-203.0.113.5", err: "starts after it ends"},
		{in: "203.0.113.1-2001:db8::1", err: "mixes"},
		{in: "203.0.113.0/33", err: "CIDR"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: "203.0.113.1-", err: "bad address"},
		{in: "", err: "bad address"},
		{in: "::ffff:203.0.113.0/120", err: "IPv4-mapped"},
	} {
		r, err := ParseRange(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("ParseRange(%q) = %v, %v; want error with %q", c.in, r, err, c.err)
		case c.err == "" && (err != nil || r.String() != c.want):
			t.Errorf("ParseRange(%q) = %v, %v; want %s", c.in, r, err, c.want)
		}
	}
}

func TestParsePool(t *testing.T) {
	for _, c := range []struct {
		name string
		pool *metallbv1beta1.IPAddressPool
		err  string
	}{
		{name: "no addresses", pool: mkPool("p", nil), err: "no addresses"},
		{name: "self overlap", pool: mkPool("p", []string{"203.0.113.0/24", "203.0.113.200-203.0.114.1"}), err: "overlap"},
		{name: "v4 and v6 do not overlap", pool: mkPool("p", []string{"203.0.113.0/24", "2001:db8:0:2::/64"})},
		{name: "bad selector", pool: mkPool("p", []string{"203.0.113.0/24"}, allocTo(metallbv1beta1.ServiceAllocation{
			ServiceSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}},
		})), err: "serviceSelectors"},
		{name: "negative priority", pool: mkPool("p", []string{"203.0.113.0/24"}, allocTo(metallbv1beta1.ServiceAllocation{Priority: -1})), err: "negative"},
	} {
		_, err := ParsePool(c.pool)
		if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.err)
		}
	}
}

func TestPoolContainsAndPoolFor(t *testing.T) {
	pools, errs := ParsePools([]*metallbv1beta1.IPAddressPool{
		mkPool("b", []string{"203.0.113.0/24"}, avoidBuggy),
		mkPool("a", []string{"2001:db8:0:2::/64", "198.51.100.10-198.51.100.12"}),
		mkPool("c", []string{"198.51.100.11/32"}),
	})
	if len(errs) != 1 || errs["c"] == nil {
		t.Fatalf("errs = %v, want pool c refused for overlap", errs)
	}
	for ip, want := range map[string]string{
		"203.0.113.1": "b", "203.0.113.0": "", "203.0.113.255": "", "2001:db8:0:2::abcd": "a",
		"198.51.100.11": "a", "198.51.100.13": "", "::ffff:198.51.100.12": "a", "2001:db8:0:3::1": "",
	} {
		p := PoolFor(pools, netip.MustParseAddr(ip))
		if (p == nil && want != "") || (p != nil && p.Name != want) {
			t.Errorf("PoolFor(%s) = %v, want %q", ip, p, want)
		}
	}
}

func TestPoolServes(t *testing.T) {
	p, err := ParsePool(mkPool("p", []string{"203.0.113.0/24"}, allocTo(metallbv1beta1.ServiceAllocation{
		Namespaces:         []string{"listed"},
		NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"team": "a"}}},
		ServiceSelectors:   []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}}}}},
	})))
	if err != nil {
		t.Fatal(err)
	}
	web := func(ns string) *corev1.Service { return mkSvc(ns, "s", 1, withLabel("tier", "web")) }
	for _, c := range []struct {
		svc  *corev1.Service
		ns   *corev1.Namespace
		want bool
	}{
		{web("listed"), nil, true},
		{web("teama"), nsWith("teama", map[string]string{"team": "a"}), true},
		{web("teamb"), nsWith("teamb", map[string]string{"team": "b"}), false},
		{web("teama"), nil, false},
		{mkSvc("listed", "s", 1), nil, false},
		{mkSvc("listed", "s", 1, withLabel("tier", "api")), nil, true},
	} {
		if got := p.Serves(c.svc, c.ns); got != c.want {
			t.Errorf("Serves(%s labels %v, ns %v) = %v", c.svc.Namespace, c.svc.Labels, c.ns, got)
		}
	}
}

// TestCapacity checks the closed-form counts against counting address by address.
func TestCapacity(t *testing.T) {
	for _, addrs := range [][]string{
		{"203.0.113.0/24"}, {"203.0.113.255-203.0.114.0"}, {"203.0.113.1-203.0.113.254"},
		{"198.18.0.0/15"}, {"203.0.113.255/32"}, {"203.0.113.7-203.0.116.3", "2001:db8::/120"},
	} {
		p, err := ParsePool(mkPool("p", addrs, avoidBuggy))
		if err != nil {
			t.Fatal(err)
		}
		var w4, w6 int64
		for _, r := range p.Ranges {
			for ip := r.From; ip.Compare(r.To) <= 0; ip = ip.Next() {
				if p.Contains(ip) {
					if ip.Is4() {
						w4++
					} else {
						w6++
					}
				}
			}
		}
		if g4, g6 := p.capacity(); g4 != w4 || g6 != w6 {
			t.Errorf("%v: capacity %d/%d, counted %d/%d", addrs, g4, g6, w4, w6)
		}
	}
	p, _ := ParsePool(mkPool("p", []string{"2001:db8::/32", "2001:db9::/64"}))
	if _, v6 := p.capacity(); v6 != math.MaxInt64 {
		t.Errorf("huge capacity %d, want saturation", v6)
	}
}

func TestParseLoadBalancerIPs(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.1":                    "[203.0.113.1]",
		" 203.0.113.1 , 2001:db8:0:2::1": "[203.0.113.1 2001:db8:0:2::1]",
		"203.0.113.1,203.0.113.2":        "error",
		"203.0.113.1,":                   "error",
		"":                               "error",
		"2001:db8::1,2001:db8::2":        "error",
	} {
		ips, err := ParseLoadBalancerIPs(in)
		g := "error"
		if err == nil {
			g = fmtAddrs(ips)
		}
		if g != want {
			t.Errorf("ParseLoadBalancerIPs(%q) = %s (%v), want %s", in, g, err, want)
		}
	}
}

func fmtAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"203.0.113.0/24", "203.0.113.5-203.0.113.9", "2001:db8::/64", "2001:db8::1 - 2001:db8::ff", "1.2.3.4", "::ffff:1.2.3.4/128", "-", "1.2.3.4-1.2.3.4-1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		if !r.From.IsValid() || r.From.Is4() != r.To.Is4() || r.From.Compare(r.To) > 0 || r.From.Zone() != "" {
			t.Fatalf("ParseRange(%q) = %v: not a sane range", s, r)
		}
		if !r.Contains(r.From) || !r.Contains(r.To) {
			t.Fatalf("ParseRange(%q) = %v does not contain its ends", s, r)
		}
		back, err := ParseRange(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRange(%q) = %v does not round-trip: %v, %v", s, r, back, err)
		}
		if rangeSize(r) < 1 {
			t.Fatalf("ParseRange(%q) = %v has size %d", s, r, rangeSize(r))
		}
	})
}

func FuzzParseLoadBalancerIPs(f *testing.F) {
	for _, s := range []string{"203.0.113.1", "203.0.113.1,2001:db8::1", " 2001:db8::1 ,203.0.113.1", ",", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ips, err := ParseLoadBalancerIPs(s)
		if err != nil {
			return
		}
		if len(ips) == 0 || len(ips) > 2 || (len(ips) == 2 && ips[0].Is4() == ips[1].Is4()) {
			t.Fatalf("ParseLoadBalancerIPs(%q) = %v", s, ips)
		}
		// Whatever parses must also be accepted as a Service's request of the same families.
		svc := mkSvc("ns", "s", 0, withAnn(lbIPs, s), withFamilies(dual, fam4, fam6))
		if r := parseRequest(svc); r.err != nil || len(r.ips) != len(ips) {
			t.Fatalf("request from %q: %v %v", s, r.ips, r.err)
		}
	})
}
