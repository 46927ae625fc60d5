package kubelet

import (
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/types"
)

// ipAllocator hands out pod IPs, one from each pod CIDR, skipping the network address, the bridge's
// gateway (the first host address) and the IPv4 broadcast address.
type ipAllocator struct {
	cidrs []netip.Prefix
	used  map[netip.Addr]types.UID
}

func newIPAllocator(cidrs []netip.Prefix) *ipAllocator {
	return &ipAllocator{cidrs: cidrs, used: map[netip.Addr]types.UID{}}
}

// maxScan bounds the search in large (IPv6) ranges; a lab node never runs that many pods.
const maxScan = 1 << 16

// Allocate returns one address per CIDR for uid. An address of preferred that lies in a CIDR and is
// free is kept, so a pod restarted by a new kubelet run keeps the IP its status already shows.
func (a *ipAllocator) Allocate(uid types.UID, preferred []netip.Addr) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, cidr := range a.cidrs {
		ip, err := a.allocateIn(cidr, uid, preferred)
		if err != nil {
			a.Release(uid)
			return nil, err
		}
		a.used[ip] = uid
		out = append(out, ip)
	}
	return out, nil
}

func (a *ipAllocator) allocateIn(cidr netip.Prefix, uid types.UID, preferred []netip.Addr) (netip.Addr, error) {
	for _, p := range preferred {
		if a.usable(cidr, p) {
			if owner, ok := a.used[p]; !ok || owner == uid {
				return p, nil
			}
		}
	}
	ip := cidr.Addr().Next().Next()
	for range maxScan {
		if !a.usable(cidr, ip) {
			break
		}
		if _, taken := a.used[ip]; !taken {
			return ip, nil
		}
		ip = ip.Next()
	}
	return netip.Addr{}, fmt.Errorf("pod range %v is full", cidr)
}

// usable reports whether ip may be a pod's address in cidr.
func (a *ipAllocator) usable(cidr netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || !cidr.Contains(ip) {
		return false
	}
	network := cidr.Masked().Addr()
	if ip == network || ip == network.Next() {
		return false
	}
	if ip.Is4() && ip == lastAddr(cidr) {
		return false
	}
	return true
}

// lastAddr is the highest address of cidr (the IPv4 broadcast address).
func lastAddr(cidr netip.Prefix) netip.Addr {
	b := cidr.Masked().Addr().AsSlice()
	for i := cidr.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip
}

// Release frees uid's addresses.
func (a *ipAllocator) Release(uid types.UID) {
	for ip, owner := range a.used {
		if owner == uid {
			delete(a.used, ip)
		}
	}
}
