package lbip

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/lbip/allocator"
	"github.com/baregate/baregate/lbip/announce"
	"github.com/baregate/baregate/lbip/member"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"
)

// LB is the lbip component: allocation while leading, and on every node gossip liveness, owner
// election and ARP/NDP.
type LB struct {
	cfg     Config
	deps    cluster.Deps
	alloc   *allocator.Allocator
	member  *member.Member
	ann     *announce.Announcer
	runner  *cluster.Runner
	metrics *metrics
	// status writes what this node announces to the API server (annotations, ServiceL2Status) apart
	// from announcing, so a slow or absent API server never delays a failover.
	status *cluster.Runner
	l2     *l2StatusWriter

	latest   atomic.Pointer[cluster.Snapshot]
	updated  chan struct{}
	changed  chan struct{}
	started  atomic.Bool
	firstRun atomic.Bool
	retrying atomic.Bool

	mu     sync.Mutex
	assign []Assignment
	since  map[netip.Addr]owned
	// lastLive is the live set the previous sync saw, sorted and joined.
	lastLive string
	// statusIn is what the last sync decided, for the status writer.
	statusIn statusInput
	// peerMACs maps the MACs of other gateways' interfaces to their node, from gossip metadata.
	peerMACs map[string]string

	// forwarding, when set, is this node's Service forwarding, whose programmed generation gates new
	// claims (see forwarded.go).
	forwarding cluster.ForwardingSource
	// Owned by the sync goroutine: since which generation this node may announce each IP, and the
	// claims held back until forwarding catches up.
	fwdSince   map[netip.Addr]uint64
	held       map[netip.Addr]heldClaim
	rechecking atomic.Bool
}

type statusInput struct {
	snap      *cluster.Snapshot
	assign    []Assignment
	live      map[string]bool
	announced map[netip.Addr][]string
}

// heldClaim is a claim waiting for this node's forwarding rules.
type heldClaim struct {
	since time.Time
	// from is the owner before the hold: taking over from a gateway needs no probe.
	from string
	// overdue is set once the claim was made anyway after forwardHoldLimit.
	overdue bool
}

type owned struct {
	node  string
	since time.Time
}

var (
	_ cluster.Component          = (*LB)(nil)
	_ cluster.Checker            = (*LB)(nil)
	_ cluster.Leader             = (*LB)(nil)
	_ cluster.Liveness           = (*LB)(nil)
	_ cluster.AnnouncementSource = (*LB)(nil)
)

// New builds the component; nothing runs until Run (and RunLeader while leading). dyn writes
// IPAddressPool status; with nil, pool status is not written.
func New(cfg Config, deps cluster.Deps, dyn dynamic.Interface) (*LB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	alloc, err := allocator.New(cfg.Allocator, deps, dyn)
	if err != nil {
		return nil, fmt.Errorf("creating the LoadBalancer IP allocator: %w", err)
	}
	var secret []byte
	if cfg.MemberSecretFile != "" {
		var err error
		if secret, err = member.ReadSecretFile(cfg.MemberSecretFile); err != nil {
			return nil, err
		}
	}
	logger := klog.Background().WithName("lbip")
	lb := &LB{
		cfg: cfg, deps: deps, alloc: alloc,
		metrics:  newMetrics(deps.Metrics),
		updated:  make(chan struct{}, 1),
		changed:  make(chan struct{}, 1),
		since:    map[netip.Addr]owned{},
		peerMACs: map[string]string{},
	}
	lb.member = member.New(member.Config{
		BindAddr: cfg.MemberBindAddress, BindPort: cfg.MemberPort,
		AdvertiseAddr: cfg.MemberAdvertiseAddress, SecretKey: secret,
	}, deps.NodeName, logger)
	lb.ann = announce.New(announce.Config{
		Allow: cfg.Interfaces, ProbeTimeout: cfg.ProbeTimeout, IsPeer: lb.isPeer,
	}, logger, announce.NewMetrics(deps.Metrics))
	// A liveness change must move IPs at once: no rate limit beyond coalescing bursts.
	lb.runner = cluster.NewRunner("lbip", 20*time.Millisecond, 500*time.Millisecond, 10*time.Second, lb.sync)
	lb.status = cluster.NewRunner("lbip-status", 100*time.Millisecond, time.Second, time.Minute, lb.syncStatus)
	lb.l2 = newL2StatusWriter(dyn, deps.Namespace, deps.NodeName)
	return lb, nil
}

// SetForwarding makes new claims wait until src (this node's Service forwarding) has programmed the
// snapshot that made this node eligible, so that clients are not refused in between. Call it before
// Run; without it claims are made at once.
func (lb *LB) SetForwarding(src cluster.ForwardingSource) { lb.forwarding = src }

// Name implements cluster.Component.
func (lb *LB) Name() string { return "lbip" }

// Update implements cluster.Component.
func (lb *LB) Update(snap *cluster.Snapshot) {
	lb.alloc.Update(snap)
	lb.latest.Store(snap)
	lb.member.SetPeers(peers(snap, lb.cfg.MemberPort))
	select {
	case lb.updated <- struct{}{}:
	default:
	}
	lb.runner.Trigger()
}

// Run starts the gossip once the first snapshot tells this node's address, then announces until ctx
// ends. Stopping leaves without a goodbye, as a crash would: the others take the IPs over.
func (lb *LB) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("lbip")
	ctx = klog.NewContext(ctx, logger)
	var snap *cluster.Snapshot
	for snap == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-lb.updated:
			snap = lb.latest.Load()
		}
	}
	advertise := lb.cfg.MemberAdvertiseAddress
	if advertise == "" {
		advertise = nodeAddress(snap.Nodes[lb.deps.NodeName])
	}
	if advertise == "" {
		// Without it memberlist would guess among private ranges, which a LAN need not use.
		return fmt.Errorf("node %s has no InternalIP to gossip from; set --lbip-memberlist-advertise-address", lb.deps.NodeName)
	}
	if err := lb.member.SetMeta(localMACs()); err != nil {
		logger.Error(err, "Publishing this node's MAC addresses to the gossip")
	}
	if err := lb.member.Start(advertise); err != nil {
		return err
	}
	lb.started.Store(true)
	defer lb.ann.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(3)
	go func() { defer wg.Done(); lb.member.Run(ctx) }()
	go func() { defer wg.Done(); lb.status.Run(ctx) }()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-lb.member.Changed():
				lb.metrics.members.Set(float64(len(lb.member.LiveNodes())))
				lb.runner.Trigger()
				select {
				case lb.changed <- struct{}{}:
				default:
				}
			}
		}
	}()
	lb.runner.Run(ctx)
	return nil
}

// sync recomputes ownership from the latest snapshot and the gossip's current view, and applies this
// node's share.
func (lb *LB) sync(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	snap := lb.latest.Load()
	if snap == nil || !lb.started.Load() {
		return nil
	}
	if err := lb.member.Ready(); err != nil {
		// Alone before joining, this node would think it owns every IP.
		logger.V(2).Info("Not announcing until the gossip has joined", "reason", err)
		return nil
	}
	lb.refreshPeerMACs()
	live := lb.member.LiveNodes()
	assign := Assign(snap, live)

	lb.mu.Lock()
	prev := lb.since
	lb.mu.Unlock()
	self := lb.deps.NodeName
	claims := lb.claims(ctx, snap, assign, prev)
	before := lb.ann.Announced()
	conflicts, setErr := lb.ann.Set(claims)
	liveKey := strings.Join(slices.Sorted(maps.Keys(live)), ",")
	if lb.lastLive != "" && liveKey != lb.lastLive {
		fresh := map[netip.Addr]bool{}
		for ip := range lb.ann.Announced() {
			if _, had := before[ip]; !had {
				fresh[ip] = true // its takeover burst is already on its way
			}
		}
		lb.ann.Reannounce(fresh)
	}
	lb.lastLive = liveKey
	lb.reportConflicts(ctx, snap, assign, conflicts)
	if refused := lb.ann.Refused(); len(refused) > 0 && lb.retrying.CompareAndSwap(false, true) {
		// Look again later whether the other host is gone.
		time.AfterFunc(announce.DefaultRetryConflict, func() {
			lb.retrying.Store(false)
			lb.runner.Trigger()
		})
	}

	now := time.Now()
	next := map[netip.Addr]owned{}
	for _, a := range assign {
		o := prev[a.IP]
		if o.node != a.Node || o.since.IsZero() {
			o = owned{node: a.Node, since: now}
			switch {
			case a.Node == self:
				lb.metrics.ownership.WithLabelValues("gained").Inc()
			case prev[a.IP].node == self:
				lb.metrics.ownership.WithLabelValues("lost").Inc()
			}
		}
		next[a.IP] = o
	}
	for ip, o := range prev {
		if _, ok := next[ip]; !ok && o.node == self {
			lb.metrics.ownership.WithLabelValues("lost").Inc()
		}
	}
	lb.mu.Lock()
	lb.assign, lb.since = assign, next
	lb.statusIn = statusInput{snap: snap, assign: assign, live: live, announced: lb.ann.Announced()}
	lb.mu.Unlock()
	lb.status.Trigger()
	lb.metrics.announced.Set(float64(len(lb.ann.Announced())))
	lb.metrics.members.Set(float64(len(live)))
	lb.firstRun.Store(true)
	return setErr
}

// syncStatus publishes what the last sync decided: the announced-by annotations and this node's
// ServiceL2Status objects. Failures are retried; the announcements are in force regardless.
func (lb *LB) syncStatus(ctx context.Context) error {
	lb.mu.Lock()
	in := lb.statusIn
	lb.mu.Unlock()
	if in.snap == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	annErr := lb.annotate(ctx, in.snap, in.assign)
	l2Err := lb.l2.apply(ctx, desiredL2Status(in.assign, in.announced, lb.deps.NodeName), in.live)
	return errors.Join(annErr, l2Err)
}

// claims lists the IPs this node announces, holding back those its forwarding has not programmed yet.
func (lb *LB) claims(ctx context.Context, snap *cluster.Snapshot, assign []Assignment, prev map[netip.Addr]owned) []announce.Claim {
	self := lb.deps.NodeName
	programmed, gated := uint64(0), lb.forwarding != nil
	if gated {
		lb.fwdSince = eligibleSince(lb.fwdSince, selfEligible(snap, self), snap.Generation)
		programmed = lb.forwarding.ForwardingStatus().Generation
	}
	now := time.Now()
	held := map[netip.Addr]heldClaim{}
	waiting := false
	var claims []announce.Claim
	for _, a := range assign {
		if a.Node != self {
			continue
		}
		was := prev[a.IP].node
		if h, ok := lb.held[a.IP]; ok {
			was = h.from
		}
		if gated && !forwardingReady(lb.fwdSince, a.IP, programmed) {
			h, ok := lb.held[a.IP]
			if !ok {
				h = heldClaim{since: now, from: was}
				klog.FromContext(ctx).V(2).Info("Waiting for this node's forwarding before announcing", "ip", a.IP,
					"eligibleSince", lb.fwdSince[a.IP], "programmed", programmed)
			}
			if now.Sub(h.since) < forwardHoldLimit {
				held[a.IP] = h
				waiting = true
				continue
			}
			if !h.overdue {
				klog.FromContext(ctx).Info("Announcing although this node's forwarding has not caught up", "ip", a.IP, "waited", now.Sub(h.since))
			}
			h.overdue = true
			held[a.IP] = h
		}
		// Taking over from a gateway we saw announce the IP needs no probe: it is ours to take,
		// and probing would only delay the failover.
		claims = append(claims, announce.Claim{IP: a.IP, Interfaces: a.Interfaces, Probe: was == "" || was == self})
	}
	lb.held = held
	if waiting && lb.rechecking.CompareAndSwap(false, true) {
		time.AfterFunc(forwardRecheck, func() {
			lb.rechecking.Store(false)
			lb.runner.Trigger()
		})
	}
	return claims
}

func (lb *LB) reportConflicts(ctx context.Context, snap *cluster.Snapshot, assign []Assignment, conflicts []announce.Conflict) {
	for _, c := range conflicts {
		klog.FromContext(ctx).Info("Refusing to announce an IP another host answers for", "ip", c.IP, "interface", c.Interface, "mac", c.MAC)
		i, found := slices.BinarySearchFunc(assign, c.IP, func(a Assignment, ip netip.Addr) int { return a.IP.Compare(ip) })
		if !found || lb.deps.Recorder == nil {
			continue
		}
		for _, key := range assign[i].Services {
			if svc := snap.Service(key); svc != nil {
				lb.deps.Recorder.Eventf(svc.Service, corev1.EventTypeWarning, "IPConflict",
					"Not announcing %s from node %s: host %s already answers for it on %s", c.IP, lb.deps.NodeName, c.MAC, c.Interface)
			}
		}
	}
}

func (lb *LB) isPeer(mac net.HardwareAddr) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	_, ok := lb.peerMACs[mac.String()]
	return ok
}

func (lb *LB) refreshPeerMACs() {
	macs := map[string]string{}
	for node, meta := range lb.member.Meta() {
		if node == lb.deps.NodeName {
			continue
		}
		for _, m := range strings.Split(string(meta), ",") {
			if m != "" {
				macs[m] = node
			}
		}
	}
	lb.mu.Lock()
	lb.peerMACs = macs
	lb.mu.Unlock()
}

// localMACs lists this node's interface MACs for the gossip metadata, as many as fit, so other
// gateways can tell this one's ARP/NDP answers from a foreign host's.
func localMACs() []byte {
	links, err := announce.Links()
	if err != nil {
		return nil
	}
	var out []byte
	for _, l := range links {
		if len(l.MAC) != 6 || !l.Up {
			continue
		}
		s := l.MAC.String()
		if len(out)+len(s)+1 > 512 {
			break
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(out, s...)
	}
	return out
}

// peers maps every other node to its gossip address: its InternalIP and the shared port.
func peers(snap *cluster.Snapshot, port int) map[string]string {
	out := map[string]string{}
	for name, n := range snap.Nodes {
		if name == snap.NodeName {
			continue
		}
		if addr := nodeAddress(n); addr != "" {
			out[name] = net.JoinHostPort(addr, strconv.Itoa(port))
		}
	}
	return out
}

// nodeAddress is a Node's first InternalIP.
func nodeAddress(n *corev1.Node) string {
	if n == nil {
		return ""
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// Ready implements cluster.Checker: the gossip has joined and ownership was applied once.
func (lb *LB) Ready() error {
	if !lb.started.Load() {
		return errors.New("gossip not started: waiting for the first cluster snapshot")
	}
	if err := lb.member.Ready(); err != nil {
		return err
	}
	if !lb.firstRun.Load() {
		return errors.New("announcements not applied yet")
	}
	return nil
}

// Healthy implements cluster.Checker: no announcement change has waited more than 30 s, and the
// allocator (when leading) keeps up.
func (lb *LB) Healthy() error {
	st := lb.runner.Status()
	if !st.Healthy(time.Now(), 30*time.Second) {
		return fmt.Errorf("announcements pending since %v: %v", st.PendingSince, st.LastError)
	}
	return lb.alloc.Healthy()
}

// RunLeader implements cluster.Leader: the allocator writes Service and pool status while this
// gateway holds the leader Lease.
func (lb *LB) RunLeader(ctx context.Context) error { return lb.alloc.RunLeader(ctx) }

// Allocation is the allocation last written by this gateway as leader, or nil.
func (lb *LB) Allocation() *allocator.Result { return lb.alloc.Last() }

// LiveNodes implements cluster.Liveness.
func (lb *LB) LiveNodes() map[string]bool { return lb.member.LiveNodes() }

// Changed implements cluster.Liveness.
func (lb *LB) Changed() <-chan struct{} { return lb.changed }

// Announcements implements cluster.AnnouncementSource.
func (lb *LB) Announcements() []cluster.Announcement {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	announced := lb.ann.Announced()
	out := make([]cluster.Announcement, 0, len(lb.assign))
	for _, a := range lb.assign {
		ifaces := a.Interfaces
		if a.Node == lb.deps.NodeName {
			// This node knows where it really answers (refused or not yet probed: none).
			ifaces = announced[a.IP]
		}
		out = append(out, cluster.Announcement{
			IP: a.IP, Services: a.Services, Pool: a.Pool, Node: a.Node,
			Since: lb.since[a.IP].since, Interfaces: ifaces,
		})
	}
	return out
}
