package allocator

import (
	"testing"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
)

func benchServices(n int) ([]*metallbv1beta1.IPAddressPool, []*corev1.Service) {
	pools := []*metallbv1beta1.IPAddressPool{mkPool("lb", []string{"198.18.0.0/16"}), mkPool("lb6", []string{"2001:db8:0:2::/64"})}
	svcs := make([]*corev1.Service, n)
	for i := range svcs {
		var opts []func(*corev1.Service)
		if i%10 == 0 {
			opts = append(opts, withAnn(sharedKey, "k"+itoa(i%30)), withPorts(int32(1000+i)))
		}
		if i%7 == 0 {
			opts = append(opts, withFamilies(dual, fam4, fam6))
		}
		svcs[i] = mkSvc("ns"+itoa(i%20), "s"+itoa(i), i, opts...)
	}
	return pools, svcs
}

// BenchmarkAllocateSteady is the common sync: every Service already holds its addresses.
func BenchmarkAllocateSteady(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(itoa(n), func(b *testing.B) {
			pools, svcs := benchServices(n)
			r := Allocate(snapshot(pools, svcs))
			snap := snapshot(pools, applied(&testing.T{}, svcs, r))
			b.ResetTimer()
			for range b.N {
				Allocate(snap)
			}
		})
	}
}

// BenchmarkAllocateFresh allocates to n Services holding nothing (a new cluster, or all pools replaced).
func BenchmarkAllocateFresh(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(itoa(n), func(b *testing.B) {
			pools, svcs := benchServices(n)
			snap := snapshot(pools, svcs)
			b.ResetTimer()
			for range b.N {
				Allocate(snap)
			}
		})
	}
}
