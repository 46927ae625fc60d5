package nodeport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
)

// errFullSync is a partial sync that nft cannot apply but a full sync can: the caller does a full sync.
var errFullSync = errors.New("partial sync needs a full sync")

// triggerTimeAnnotation is set by the EndpointSlice controller to when the change it reflects happened.
const triggerTimeAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"

// Proxy programs this node's Service forwarding. It implements cluster.Component, cluster.Checker and
// cluster.ForwardingSource.
type Proxy struct {
	cfg     Config
	deps    cluster.Deps
	base    Options
	npCIDRs []netip.Prefix

	nft             knftables.Interface
	listTables      func(context.Context) (map[knftables.Family]existingObjects, error)
	localAddrs      func() ([]netip.Addr, error)
	deleteConntrack func([]staleFlow) (uint, error)

	runner  *cluster.Runner
	metrics *metrics
	health  *healthServers

	mu   sync.Mutex
	snap *cluster.Snapshot

	// Owned by the sync goroutine.
	applied *Desired
	builder *Builder
	// kernel is what the last successful sync programmed; nil forces a full sync.
	kernel   *kernelState
	lastFull time.Time
	applyOps func(context.Context, []op) error
	// runFull runs a full sync's transaction.
	runFull func(context.Context, *knftables.Transaction) error
	// netlink is the socket partial syncs use, when they use netlink.
	netlink *lastingNetlink
	// prepareElements, when set, encodes a cold start's Service elements (see coldStart) into a
	// netlink batch and returns the kernel state after the sync, what sends the batch and how many
	// elements it holds.
	prepareElements func(*Desired, []*Table) (*kernelState, func() error, int, error)
	seenSlices      map[types.UID]string
	reported        map[Problem]bool

	ready  atomic.Bool
	status atomic.Pointer[cluster.ForwardingInfo]
}

var (
	_ cluster.Component        = (*Proxy)(nil)
	_ cluster.Checker          = (*Proxy)(nil)
	_ cluster.ForwardingSource = (*Proxy)(nil)
)

// New returns a Proxy for cfg programming the kernel's nftables through nft. It starts nothing.
func New(cfg Config, deps cluster.Deps) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// An empty family and table let one transaction span both of our tables.
	nft, err := knftables.New("", "")
	if err != nil {
		return nil, fmt.Errorf("starting nftables: %w", err)
	}
	list := func(context.Context) (map[knftables.Family]existingObjects, error) { return listWithNetlink() }
	p, err := newProxy(cfg, deps, nft, list, localAddresses, deleteStaleUDP)
	if err != nil {
		return nil, err
	}
	p.prepareElements = prepareColdStart
	p.runFull = runGrouped
	p.netlink = &lastingNetlink{}
	p.applyOps = func(ctx context.Context, ops []op) error { return p.applyNetlinkOrNFT(ctx, ops, p.netlink.apply) }
	return p, nil
}

// applyNetlinkOrNFT sends ops over netlink, or through nft when netlink does not translate them.
func (p *Proxy) applyNetlinkOrNFT(ctx context.Context, ops []op, netlink func([]op) error) error {
	err := netlink(ops)
	if errors.Is(err, errNotNetlink) {
		if slices.ContainsFunc(ops, readsEndpointMap) {
			return fmt.Errorf("%w: %w", errFullSync, err)
		}
		// Rare shapes (affinity sets, source ranges, skeleton changes) go through nft.
		return p.applyWithNFT(ctx, ops)
	}
	return err
}

// runGrouped runs tx as knftables would (nft -f -), with its elements grouped by set (groupElements).
func runGrouped(ctx context.Context, tx *knftables.Transaction) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(groupElements(tx.String()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("running nft -f: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// applyWithNFT runs ops as one nft transaction.
func (p *Proxy) applyWithNFT(ctx context.Context, ops []op) error {
	tx := p.nft.NewTransaction()
	addOps(tx, ops)
	return p.nft.Run(ctx, tx)
}

func newProxy(cfg Config, deps cluster.Deps, nft knftables.Interface,
	list func(context.Context) (map[knftables.Family]existingObjects, error),
	localAddrs func() ([]netip.Addr, error), deleteConntrack func([]staleFlow) (uint, error)) (*Proxy, error) {
	clusterCIDRs, _ := parseCIDRs(cfg.ClusterCIDRs)
	npCIDRs, _ := parseCIDRs(cfg.NodePortAddresses)
	if cfg.SyncPeriod == 0 {
		cfg.SyncPeriod = time.Hour
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("registering nodeport metrics: %w", err)
	}
	p := &Proxy{
		cfg:  cfg,
		deps: deps,
		base: Options{
			MasqueradeMark:    1 << cfg.MasqueradeBit,
			MasqueradeAll:     cfg.MasqueradeAll,
			ClusterCIDRs:      clusterCIDRs,
			RestrictNodePorts: len(npCIDRs) > 0,
		},
		npCIDRs:         npCIDRs,
		nft:             nft,
		listTables:      list,
		localAddrs:      localAddrs,
		deleteConntrack: deleteConntrack,
		metrics:         m,
		builder:         NewBuilder(),
		seenSlices:      map[types.UID]string{},
		reported:        map[Problem]bool{},
	}
	p.applyOps = p.applyWithNFT
	p.runFull = nft.Run
	p.health = newHealthServers(cfg.HealthCheckBindAddress, func() bool { return p.Healthy() == nil })
	p.runner = cluster.NewRunner("nodeport", cfg.MinSyncPeriod, time.Second, time.Minute, p.sync)
	return p, nil
}

// Name implements cluster.Component.
func (p *Proxy) Name() string { return "nodeport" }

// Update implements cluster.Component: it keeps the newest snapshot and asks for a sync.
func (p *Proxy) Update(s *cluster.Snapshot) {
	p.mu.Lock()
	p.snap = s
	p.mu.Unlock()
	p.runner.Trigger()
}

// Run programs the rules until ctx ends. The rules stay when it returns, so traffic keeps flowing
// while baregate restarts; Cleanup removes them.
func (p *Proxy) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("nodeport")
	ctx = klog.NewContext(ctx, logger)
	if err := enableForwarding(); err != nil {
		logger.Error(err, "Could not enable IP forwarding; Service traffic to other nodes' endpoints will not flow")
	}
	defer p.health.close()
	if p.netlink != nil {
		defer p.netlink.close() // after the runner: only its syncs use it
	}
	go func() {
		// The runner only syncs when asked; the periodic full sync needs asking too.
		tick := time.NewTicker(p.cfg.SyncPeriod)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				p.runner.Trigger()
			}
		}
	}()
	p.runner.Run(ctx)
	return nil
}

// Ready implements cluster.Checker: ready once the rules have been programmed once.
func (p *Proxy) Ready() error {
	if !p.ready.Load() {
		return errors.New("nodeport: Service rules not programmed yet")
	}
	return nil
}

// Healthy implements cluster.Checker with kube-proxy's /healthz meaning: unhealthy when a change has
// waited longer than the healthz timeout without being programmed.
func (p *Proxy) Healthy() error {
	st := p.runner.Status()
	if !st.Healthy(time.Now(), p.cfg.HealthzTimeout) {
		return fmt.Errorf("nodeport: a change has waited since %s without being programmed (last error: %v)", st.PendingSince.Format(time.RFC3339), st.LastError)
	}
	return nil
}

// ForwardingStatus implements cluster.ForwardingSource.
func (p *Proxy) ForwardingStatus() cluster.ForwardingInfo {
	var info cluster.ForwardingInfo
	if s := p.status.Load(); s != nil {
		info = *s
	}
	info.Runner = p.runner.Status()
	return info
}

// sync programs the newest snapshot: a partial transaction against what was applied last, or a full
// one at start and after any failure (the kernel's state is then unknown).
func (p *Proxy) sync(ctx context.Context) error {
	p.mu.Lock()
	snap := p.snap
	p.mu.Unlock()
	if snap == nil {
		return nil
	}
	logger := klog.FromContext(ctx)
	start := time.Now()
	opts := p.base
	if opts.RestrictNodePorts {
		addrs, err := p.localAddrs()
		if err != nil {
			return fmt.Errorf("listing local addresses for --nodeport-addresses: %w", err)
		}
		for _, a := range addrs {
			for _, c := range p.npCIDRs {
				if c.Contains(a) {
					opts.NodePortAddresses = append(opts.NodePortAddresses, a)
					break
				}
			}
		}
	}
	d := p.builder.Build(snap, opts)
	kind, operations := "partial", 0
	if p.kernel != nil && start.Sub(p.lastFull) < p.cfg.SyncPeriod {
		ops := p.kernel.diff(d)
		operations = len(ops)
		if len(ops) > 0 {
			if err := p.applyOps(ctx, ops); err != nil {
				p.kernel = nil
				if !errors.Is(err, errFullSync) {
					p.metrics.syncFailures.Inc()
					return fmt.Errorf("programming nftables (partial sync of %d operations): %w", operations, err)
				}
				logger.V(2).Info("Partial sync needs nft for a rule it cannot add; doing a full sync instead", "reason", err)
			}
		}
	}
	if p.kernel == nil || start.Sub(p.lastFull) >= p.cfg.SyncPeriod {
		kind = "full"
		existing, err := p.listTables(ctx)
		if err != nil {
			p.metrics.syncFailures.Inc()
			return fmt.Errorf("listing baregate's nftables objects: %w", err)
		}
		tx := p.nft.NewTransaction()
		var k *kernelState
		if len(existing) == 0 && p.prepareElements != nil {
			// Cold start (see coldStart): the Services' elements are worked out and encoded while nft
			// writes the rules, and sent once it is done.
			tables := coldStart(tx, d)
			var send func() error
			var prepErr error
			prepared := make(chan struct{})
			go func() {
				defer close(prepared)
				var n int
				k, send, n, prepErr = p.prepareElements(d, tables)
				operations += n
			}()
			err = p.runFull(ctx, tx)
			<-prepared
			operations += tx.NumOperations()
			if err == nil {
				err = prepErr
			}
			if err == nil {
				err = send()
			}
		} else {
			k = newKernelState(d)
			fullTransaction(tx, d, existing)
			operations = tx.NumOperations()
			err = p.runFull(ctx, tx)
		}
		if err != nil {
			p.kernel = nil
			p.metrics.syncFailures.Inc()
			return fmt.Errorf("programming nftables (full sync of %d operations): %w", operations, err)
		}
		p.kernel, p.lastFull = k, start
	}
	prev := p.applied
	p.applied = d
	p.ready.Store(true)
	now := time.Now()
	p.metrics.syncDuration.WithLabelValues(kind).Observe(now.Sub(start).Seconds())
	p.metrics.rules.Set(float64(d.Rules()))
	p.metrics.elements.Set(float64(d.ElementCount()))
	p.metrics.lastSync.SetToCurrentTime()
	p.status.Store(&cluster.ForwardingInfo{Generation: snap.Generation, Services: d.Services, Rules: d.Rules(), Elements: d.ElementCount(), Verdicts: d.Verdicts})
	logger.V(2).Info("Programmed Service rules", "kind", kind, "operations", operations, "services", d.Services, "duration", now.Sub(start))

	if prev != nil {
		if stale := staleUDP(prev.UDP, d.UDP); len(stale) > 0 {
			n, err := p.deleteConntrack(stale)
			p.metrics.conntrackDeleted.Add(float64(n))
			if err != nil {
				logger.Error(err, "Could not delete stale UDP conntrack entries")
			}
		}
	}
	if err := p.health.update(ctx, d.HealthChecks); err != nil {
		logger.Error(err, "Could not serve every health check node port")
	}
	p.reportProblems(snap, d.Problems)
	p.observeProgramming(snap, now, prev == nil)
	return nil
}

// reportProblems turns each newly found bad value into a Warning Event on its Service.
func (p *Proxy) reportProblems(snap *cluster.Snapshot, problems []Problem) {
	current := make(map[Problem]bool, len(problems))
	for _, pr := range problems {
		current[pr] = true
		if p.reported[pr] || p.deps.Recorder == nil {
			continue
		}
		if svc := snap.Service(pr.Service); svc != nil {
			p.deps.Recorder.Eventf(svc.Service, corev1.EventTypeWarning, pr.Reason, "%s", pr.Message)
		}
	}
	p.reported = current
}

// observeProgramming records, for each EndpointSlice changed since the last sync, the time from the
// change that triggered it to now. The first sync only learns the slices: their changes are old.
func (p *Proxy) observeProgramming(snap *cluster.Snapshot, now time.Time, first bool) {
	seen := make(map[types.UID]string, len(p.seenSlices))
	for _, svc := range snap.Services {
		for _, es := range svc.Slices {
			seen[es.UID] = es.ResourceVersion
			if first || p.seenSlices[es.UID] == es.ResourceVersion {
				continue
			}
			if t, err := time.Parse(time.RFC3339, es.Annotations[triggerTimeAnnotation]); err == nil && !t.After(now) {
				p.metrics.programmingLatency.Observe(now.Sub(t).Seconds())
			}
		}
	}
	p.seenSlices = seen
}

// Cleanup removes both of baregate's tables (for baregate cleanup). Tables of others are untouched.
func Cleanup(ctx context.Context) error {
	var errs []error
	for _, f := range families {
		nft, err := knftables.New(f.nft, TableName)
		if err != nil {
			return fmt.Errorf("starting nftables: %w", err)
		}
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting table %s %s: %w", f.nft, TableName, err))
		}
	}
	return errors.Join(errs...)
}

func localAddresses() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// enableForwarding turns on IPv4 and IPv6 forwarding when off: DNAT to an endpoint on another node or
// in a pod is forwarding.
func enableForwarding() error {
	var errs []error
	for _, path := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		cur, err := os.ReadFile(path)
		if err != nil {
			if !os.IsNotExist(err) { // no IPv6 in this kernel
				errs = append(errs, err)
			}
			continue
		}
		if strings.TrimSpace(string(cur)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("setting %s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}
