package allocator

import (
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"
)

// state is who uses which address while Allocate runs.
type state struct {
	used map[netip.Addr]*use
	// reserved are pool addresses Services list in spec.externalIPs: never handed out automatically,
	// so one address is not announced for two purposes.
	reserved map[netip.Addr][]types.NamespacedName
	// cursor[r] is an address of range r below which every address is in use, reserved or buggy:
	// Services that share with nobody start looking there, which keeps allocating n Services
	// linear rather than quadratic. A release forgets all cursors.
	cursor map[cursorKey]netip.Addr
}

type cursorKey struct {
	pool  string
	index int
}

// use is one address's holders; they all share its sharing and backend keys.
type use struct {
	pool             string
	sharing, backend string
	ports            map[port]types.NamespacedName
	services         []types.NamespacedName
}

func newState() *state {
	return &state{used: map[netip.Addr]*use{}, reserved: map[netip.Addr][]types.NamespacedName{}, cursor: map[cursorKey]netip.Addr{}}
}

// check says why key may not use ip, or nil. The rules are MetalLB's: an address is shared only
// between Services with the same non-empty sharing key and the same backend key, whose ports differ.
func (st *state) check(key types.NamespacedName, ip netip.Addr, req *request) error {
	u := st.used[ip]
	if u == nil {
		return nil
	}
	i := slices.IndexFunc(u.services, func(k types.NamespacedName) bool { return k != key })
	if i < 0 {
		return nil
	}
	other := u.services[i]
	switch {
	case u.sharing == "" || req.sharing == "":
		return fmt.Errorf("%s is used by %s and sharing needs the same %s on both", ip, other, AnnotationAllowSharedIP)
	case u.sharing != req.sharing:
		return fmt.Errorf("%s is used by %s with sharing key %q, not %q", ip, other, u.sharing, req.sharing)
	case u.backend != req.backend:
		return fmt.Errorf("%s is used by %s with an incompatible traffic policy (externalTrafficPolicy Local Services share only with Services selecting the same pods)", ip, other)
	}
	for _, p := range req.ports {
		if k, ok := u.ports[p]; ok && k != key {
			return fmt.Errorf("%s port %d/%s is used by %s", ip, p.port, p.proto, k)
		}
	}
	return nil
}

func (st *state) take(key types.NamespacedName, ip netip.Addr, pool string, req *request) {
	u := st.used[ip]
	if u == nil {
		u = &use{pool: pool, ports: map[port]types.NamespacedName{}}
		st.used[ip] = u
	}
	// The last Service to join sets the keys; check made sure they agree with the others'.
	u.sharing, u.backend = req.sharing, req.backend
	if !slices.Contains(u.services, key) {
		u.services = append(u.services, key)
	}
	for _, p := range req.ports {
		u.ports[p] = key
	}
}

func (st *state) release(key types.NamespacedName, ip netip.Addr) {
	u := st.used[ip]
	if u == nil {
		return
	}
	u.services = slices.DeleteFunc(u.services, func(k types.NamespacedName) bool { return k == key })
	for p, k := range u.ports {
		if k == key {
			delete(u.ports, p)
		}
	}
	if len(u.services) == 0 {
		delete(st.used, ip)
		clear(st.cursor)
	}
}

// free returns the lowest address of family f in pool that key may use: an unused one, or one it
// may share (as in MetalLB, Services with a sharing key pack onto the first compatible address).
func (st *state) free(pool *Pool, f family, key types.NamespacedName, req *request) (netip.Addr, bool) {
	for i, r := range pool.Ranges {
		if familyOf(r.From) != f {
			continue
		}
		ck := cursorKey{pool.Name, i}
		start, moving := r.From, req.sharing == ""
		if c, ok := st.cursor[ck]; ok && moving {
			start = c
		}
		for ip := start; ip.IsValid() && ip.Compare(r.To) <= 0; ip = ip.Next() {
			_, reserved := st.reserved[ip]
			if reserved || (pool.AvoidBuggyIPs && buggy(ip)) {
				continue
			}
			if moving {
				if _, inUse := st.used[ip]; inUse {
					continue
				}
				st.cursor[ck] = ip
				return ip, true
			}
			if st.check(key, ip, req) == nil {
				return ip, true
			}
		}
		if moving {
			st.cursor[ck] = r.To.Next() // full; an invalid address past the end of IPv6 space also ends the loop
		}
	}
	return netip.Addr{}, false
}
