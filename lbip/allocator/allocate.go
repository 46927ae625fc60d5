package allocator

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/baregate/baregate/internal/cluster"
)

// Reasons of refusals; they are the Reason of the AllocationFailed Events too.
const (
	ReasonPoolExhausted  = "PoolExhausted"
	ReasonIPNotInPool    = "IPNotInPool"
	ReasonIPTaken        = "IPTaken"
	ReasonBadAnnotation  = "BadAnnotation"
	ReasonUnknownPool    = "UnknownPool"
	ReasonPoolNotAllowed = "PoolNotAllowed"
	ReasonNoPool         = "NoPool"
)

// Result is the allocation the cluster should have.
type Result struct {
	// Services has one entry per LoadBalancer Service of baregate's class, sorted by key.
	Services []Assignment
	// Clear lists Services that are no longer LoadBalancers but still carry load-balancer status.
	Clear []types.NamespacedName
	// ExternalIPs are the spec.externalIPs that fall in a pool marked with ExternalIPsAnnotation.
	ExternalIPs []ExternalIP
	// Pools has one entry per IPAddressPool, sorted by name.
	Pools []PoolStatus
}

// Assignment is what one Service gets.
type Assignment struct {
	Service types.NamespacedName
	// IPs are the Service's load-balancer IPs, primary family first; Pools[i] is IPs[i]'s pool (empty
	// for an address kept unchecked while some pool is invalid).
	IPs   []netip.Addr
	Pools []string
	// Changed is set when IPs differ from what the Service's status holds.
	Changed bool
	// Refusal says why the Service did not get (all) it asked for; nil when it did.
	Refusal *Refusal
}

// Refusal is a reason (one of the Reason constants) and a message for the Service's owner.
type Refusal struct {
	Reason  string
	Message string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ExternalIP is a spec.externalIPs address to announce.
type ExternalIP struct {
	IP       netip.Addr
	Pool     string
	Services []types.NamespacedName
}

// PoolStatus is a pool's usage, as its status subresource should show it.
type PoolStatus struct {
	Name string
	// Err is why the pool was refused; such a pool hands out nothing and its status is left alone.
	Err    error
	Status metallbv1beta1.IPAddressPoolStatus
	Object *metallbv1beta1.IPAddressPool
}

// Allocate decides every LoadBalancer Service's IPs from the snapshot alone, so that any leader,
// after any restart, reaches the same answer: what a Service's status holds it keeps while still
// valid, and holders are placed before newcomers, oldest Service first.
func Allocate(snap *cluster.Snapshot) Result {
	pools, poolErrs := ParsePools(snap.Pools)
	st := newState()
	var res Result
	res.ExternalIPs = externalIPs(snap.Services, pools, st)

	type item struct {
		svc *corev1.Service
		req request
		a   *Assignment
	}
	lbs := snap.LoadBalancers()
	items := make([]*item, 0, len(lbs))
	res.Services = make([]Assignment, len(lbs))
	for i, s := range lbs {
		res.Services[i].Service = s.Key()
		items = append(items, &item{svc: s.Service, req: parseRequest(s.Service), a: &res.Services[i]})
	}
	slices.SortFunc(items, func(a, b *item) int { // keys are unique: the order is total
		return cmp.Or(a.svc.CreationTimestamp.Compare(b.svc.CreationTimestamp.Time),
			strings.Compare(a.svc.Namespace, b.svc.Namespace), strings.Compare(a.svc.Name, b.svc.Name))
	})
	al := &allocation{st: st, pools: pools, poolErrs: poolErrs, namespaces: snap.Namespaces}
	for _, it := range items {
		al.keep(it.svc, &it.req, it.a)
	}
	// Among newcomers, explicit requests go first: an address someone asked for by name should not
	// go to a Service that would be as happy with any other.
	for _, explicit := range []bool{true, false} {
		for _, it := range items {
			if (len(it.req.ips) > 0) == explicit {
				al.grow(it.svc, &it.req, it.a)
			}
		}
	}
	for _, it := range items {
		cur, clean := statusIPs(it.svc)
		it.a.Changed = !clean || !sameSet(cur, it.a.IPs)
	}

	for _, s := range snap.Services {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer && len(s.Status.LoadBalancer.Ingress) > 0 {
			// Only a type change ends a Service being ours: spec.loadBalancerClass is immutable,
			// so Services of other classes never were, and their status is not ours to touch.
			res.Clear = append(res.Clear, s.Key())
		}
	}
	res.Pools = poolStatuses(snap.Pools, pools, poolErrs, st)
	return res
}

type allocation struct {
	st         *state
	pools      []*Pool
	poolErrs   map[string]error
	namespaces map[string]*corev1.Namespace
}

func (al *allocation) poolNamed(name string) *Pool {
	for _, p := range al.pools {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// keep places the addresses svc's status holds that are still valid for it.
func (al *allocation) keep(svc *corev1.Service, req *request, a *Assignment) {
	cur, _ := statusIPs(svc)
	if req.err == nil && len(req.ips) > 0 && !sameSet(cur, req.ips) {
		return // the user asked for other addresses: grow assigns them
	}
	key := a.Service
	ns := al.namespaces[svc.Namespace]
	for _, ip := range cur {
		if !slices.Contains(req.families, familyOf(ip)) || slices.ContainsFunc(a.IPs, func(k netip.Addr) bool { return familyOf(k) == familyOf(ip) }) {
			continue
		}
		pool := PoolFor(al.pools, ip)
		if pool == nil {
			if len(al.poolErrs) > 0 {
				// The address may belong to a pool refused for a typo: keep it rather than move
				// traffic because of a config mistake; it is checked again once the pool is fixed.
				a.IPs, a.Pools = append(a.IPs, ip), append(a.Pools, "")
			}
			continue
		}
		if (req.pool != "" && pool.Name != req.pool) || !pool.Serves(svc, ns) || al.st.check(key, ip, req) != nil {
			continue
		}
		al.st.take(key, ip, pool.Name, req)
		a.IPs, a.Pools = append(a.IPs, ip), append(a.Pools, pool.Name)
	}
}

// grow gives svc the addresses it still lacks, or says why it cannot.
func (al *allocation) grow(svc *corev1.Service, req *request, a *Assignment) {
	defer a.sortBy(req.families)
	if req.err != nil {
		a.Refusal = refuse(ReasonBadAnnotation, "%v", req.err)
		return
	}
	if len(a.IPs) >= len(req.families) {
		return
	}
	if len(req.ips) > 0 {
		if !sameSet(a.IPs, req.ips) {
			for _, ip := range a.IPs {
				al.st.release(a.Service, ip)
			}
			a.IPs, a.Pools = nil, nil
			a.Refusal = al.assignRequested(svc, req, a)
		}
		return
	}
	candidates, refusal := al.candidates(svc, req)
	if refusal != nil {
		a.Refusal = refusal
		return
	}
	var missing []string
	for _, f := range req.families {
		if slices.ContainsFunc(a.IPs, func(ip netip.Addr) bool { return familyOf(ip) == f }) {
			continue
		}
		found := false
		for _, p := range preferHeld(candidates, a.Pools) {
			if ip, ok := al.st.free(p, f, a.Service, req); ok {
				al.st.take(a.Service, ip, p.Name, req)
				a.IPs, a.Pools = append(a.IPs, ip), append(a.Pools, p.Name)
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, f.String())
		}
	}
	if len(a.IPs) >= req.required {
		return
	}
	names := make([]string, len(candidates))
	for i, p := range candidates {
		names[i] = p.Name
	}
	a.Refusal = refuse(ReasonPoolExhausted, "no free %s address for this Service in pool(s) %s", strings.Join(missing, " or "), strings.Join(names, ", "))
	// RequireDualStack is both families or none: give back the half already held.
	for _, ip := range a.IPs {
		al.st.release(a.Service, ip)
	}
	a.IPs, a.Pools = nil, nil
}

// preferHeld moves the pool the Service already has an address from to the front, so that a
// dual-stack pair comes from one pool when it can.
func preferHeld(candidates []*Pool, held []string) []*Pool {
	if len(held) == 0 {
		return candidates
	}
	i := slices.IndexFunc(candidates, func(p *Pool) bool { return p.Name == held[0] })
	if i <= 0 {
		return candidates
	}
	return append([]*Pool{candidates[i]}, slices.Delete(slices.Clone(candidates), i, i+1)...)
}

func (al *allocation) assignRequested(svc *corev1.Service, req *request, a *Assignment) *Refusal {
	if len(req.ips) < req.required {
		return refuse(ReasonBadAnnotation, "the Service requires dual-stack but requests only %s", req.ips[0])
	}
	ns := al.namespaces[svc.Namespace]
	pools := make([]string, len(req.ips))
	for i, ip := range req.ips {
		pool := PoolFor(al.pools, ip)
		switch {
		case pool == nil:
			return refuse(ReasonIPNotInPool, "requested %s is in no usable IPAddressPool", ip)
		case req.pool != "" && pool.Name != req.pool:
			return refuse(ReasonIPNotInPool, "requested %s is in pool %s, not in the requested pool %s", ip, pool.Name, req.pool)
		case !pool.Serves(svc, ns):
			return refuse(ReasonPoolNotAllowed, "requested %s is in pool %s, whose serviceAllocation does not admit this Service", ip, pool.Name)
		}
		if holders, ok := al.st.reserved[ip]; ok {
			return refuse(ReasonIPTaken, "requested %s is an external IP of %s", ip, holders[0])
		}
		if err := al.st.check(a.Service, ip, req); err != nil {
			return refuse(ReasonIPTaken, "requested %v", err)
		}
		pools[i] = pool.Name
	}
	for i, ip := range req.ips {
		al.st.take(a.Service, ip, pools[i], req)
	}
	a.IPs, a.Pools = slices.Clone(req.ips), pools
	return nil
}

// candidates are the pools to allocate from, in order: the requested pool alone; else the
// restricted pools that select the Service by priority, then the unrestricted ones by name.
func (al *allocation) candidates(svc *corev1.Service, req *request) ([]*Pool, *Refusal) {
	ns := al.namespaces[svc.Namespace]
	if req.pool != "" {
		p := al.poolNamed(req.pool)
		switch {
		case p == nil && al.poolErrs[req.pool] != nil:
			return nil, refuse(ReasonUnknownPool, "requested pool %s is invalid: %v", req.pool, al.poolErrs[req.pool])
		case p == nil:
			return nil, refuse(ReasonUnknownPool, "requested pool %s does not exist", req.pool)
		case !p.Serves(svc, ns):
			return nil, refuse(ReasonPoolNotAllowed, "requested pool %s's serviceAllocation does not admit this Service", req.pool)
		}
		return []*Pool{p}, nil
	}
	var restricted, open []*Pool
	for _, p := range al.pools {
		switch {
		case !p.AutoAssign:
		case p.Restricted && p.Serves(svc, ns):
			restricted = append(restricted, p)
		case !p.Restricted:
			open = append(open, p)
		}
	}
	slices.SortStableFunc(restricted, func(a, b *Pool) int {
		// Priority 0 means unset: after every set priority.
		return cmp.Compare(uint(a.Priority-1), uint(b.Priority-1))
	})
	out := append(restricted, open...)
	if len(out) == 0 {
		if len(al.pools) == 0 {
			return nil, refuse(ReasonNoPool, "there is no usable IPAddressPool")
		}
		return nil, refuse(ReasonNoPool, "no IPAddressPool with autoAssign admits this Service")
	}
	return out, nil
}

func (a *Assignment) sortBy(fams []family) {
	idx := make([]int, len(a.IPs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(x, y int) int {
		return slices.Index(fams, familyOf(a.IPs[x])) - slices.Index(fams, familyOf(a.IPs[y]))
	})
	ips, pools := make([]netip.Addr, len(idx)), make([]string, len(idx))
	for i, j := range idx {
		ips[i], pools[i] = a.IPs[j], a.Pools[j]
	}
	if len(idx) > 0 {
		a.IPs, a.Pools = ips, pools
	}
}

// statusIPs returns the addresses of svc's load-balancer status; clean is false when the status holds
// anything else (hostnames, garbage) that a rewrite should remove.
func statusIPs(svc *corev1.Service) (ips []netip.Addr, clean bool) {
	clean = true
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ip, err := netip.ParseAddr(in.IP)
		if err != nil || in.Hostname != "" || ip.Zone() != "" || slices.Contains(ips, ip.Unmap()) {
			clean = false
			continue
		}
		ips = append(ips, ip.Unmap())
	}
	return ips, clean
}

func sameSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, ip := range a {
		if !slices.Contains(b, ip) {
			return false
		}
	}
	return true
}

// externalIPs finds the spec.externalIPs in pools marked for them and reserves them in st.
func externalIPs(svcs []*cluster.Service, pools []*Pool, st *state) []ExternalIP {
	var marked []*Pool
	for _, p := range pools {
		if p.ExternalIPs {
			marked = append(marked, p)
		}
	}
	if len(marked) == 0 {
		return nil
	}
	byIP := map[netip.Addr]*ExternalIP{}
	for _, s := range svcs {
		for _, raw := range s.Spec.ExternalIPs {
			ip, err := parseAddr(raw)
			if err != nil {
				continue // the API server validates externalIPs; nothing to announce for garbage
			}
			p := PoolFor(marked, ip)
			if p == nil {
				continue
			}
			e := byIP[ip]
			if e == nil {
				e = &ExternalIP{IP: ip, Pool: p.Name}
				byIP[ip] = e
			}
			if !slices.Contains(e.Services, s.Key()) {
				e.Services = append(e.Services, s.Key())
			}
			st.reserved[ip] = e.Services
		}
	}
	out := make([]ExternalIP, 0, len(byIP))
	for _, e := range byIP {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b ExternalIP) int { return a.IP.Compare(b.IP) })
	return out
}

func poolStatuses(objs []*metallbv1beta1.IPAddressPool, pools []*Pool, errs map[string]error, st *state) []PoolStatus {
	assigned := map[string]*metallbv1beta1.IPAddressPoolStatus{}
	for _, p := range pools {
		assigned[p.Name] = &metallbv1beta1.IPAddressPoolStatus{}
	}
	for ip, u := range st.used {
		if c := assigned[u.pool]; c != nil {
			if ip.Is4() {
				c.AssignedIPv4++
			} else {
				c.AssignedIPv6++
			}
		}
	}
	out := make([]PoolStatus, 0, len(objs))
	for _, obj := range objs {
		ps := PoolStatus{Name: obj.Name, Err: errs[obj.Name], Object: obj}
		if i := slices.IndexFunc(pools, func(p *Pool) bool { return p.Object == obj }); i >= 0 {
			c := assigned[pools[i].Name]
			v4, v6 := pools[i].capacity()
			ps.Status = metallbv1beta1.IPAddressPoolStatus{
				AssignedIPv4: c.AssignedIPv4, AssignedIPv6: c.AssignedIPv6,
				AvailableIPv4: v4 - c.AssignedIPv4, AvailableIPv6: v6 - c.AssignedIPv6,
			}
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PoolStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}
