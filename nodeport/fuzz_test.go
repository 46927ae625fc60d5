package nodeport

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// FuzzServiceInput feeds arbitrary user-written addresses (external IPs, LB status, source ranges) to
// Build: whatever they hold, the ruleset must apply (the fake checks syntax and references) and a good
// Service next to the bad one must keep working.
func FuzzServiceInput(f *testing.F) {
	f.Add("198.51.100.10", "203.0.113.10", "192.0.2.0/24")
	f.Add("not-an-ip", "", "192.0.2.1")
	f.Add("2001:db8:0:3::1", "::ffff:203.0.113.9", " 10.0.0.0/8 ")
	f.Add("fe80::1%eth0", "203.0.113.10%x", "2001:db8::/129")
	f.Add("198.51.100.10; flush ruleset", "203.0.113.10 }", "0.0.0.0/0, 1.2.3.4/32")
	f.Fuzz(func(t *testing.T, externalIP, lbIP, sourceRange string) {
		bad := svc("bad", "198.19.0.20", nodePort(30020), loadBalancer(lbIP), func(s *corev1.Service) {
			s.Spec.ExternalIPs = strings.Split(externalIP, ",")
			s.Spec.LoadBalancerSourceRanges = []string{sourceRange}
		})
		w := &world{
			services: []*corev1.Service{bad, svc("good", "198.19.0.21")},
			slices:   []*discoveryv1.EndpointSlice{twoNodeSlice("bad"), twoNodeSlice("good")},
		}
		tr, d := traceWorld(t, w, testOpts)
		for _, tbl := range d.Tables() {
			for _, els := range tbl.Elements {
				for k := range els {
					if strings.ContainsAny(k, "%;{}") {
						t.Errorf("element %q carries user text nft would misread", k)
					}
				}
			}
		}
		got := tr.trace("198.18.1.5", "198.19.0.21", "tcp", 80, false)
		if len(got.Endpoints) != 2 {
			t.Errorf("the good Service reaches %v", got.Endpoints)
		}
	})
}
