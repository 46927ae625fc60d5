package lbip

import (
	"net/netip"

	"github.com/baregate/baregate/lbip/allocator"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
)

// poolIndex finds the pool an IP belongs to, with the allocator's parser. A pool the allocator
// refuses (a typo, an overlap) hands out nothing new, but the IPs it already gave keep being
// announced from its entries that still parse: breaking a pool must not cut its Services off.
type poolIndex struct {
	valid   []*allocator.Pool
	refused []refusedPool
}

type refusedPool struct {
	obj    *metallbv1beta1.IPAddressPool
	ranges []allocator.Range
}

func newPoolIndex(objs []*metallbv1beta1.IPAddressPool) *poolIndex {
	valid, errs := allocator.ParsePools(objs)
	idx := &poolIndex{valid: valid}
	for _, obj := range objs {
		if errs[obj.Name] == nil {
			continue
		}
		rp := refusedPool{obj: obj}
		for _, a := range obj.Spec.Addresses {
			if r, err := allocator.ParseRange(a); err == nil {
				rp.ranges = append(rp.ranges, r)
			}
		}
		idx.refused = append(idx.refused, rp)
	}
	return idx
}

// poolFor returns the pool holding ip, or nil.
func (idx *poolIndex) poolFor(ip netip.Addr) *metallbv1beta1.IPAddressPool {
	if p := allocator.PoolFor(idx.valid, ip); p != nil {
		return p.Object
	}
	for _, rp := range idx.refused {
		for _, r := range rp.ranges {
			if r.From.Is4() == ip.Is4() && r.Contains(ip) {
				return rp.obj
			}
		}
	}
	return nil
}
