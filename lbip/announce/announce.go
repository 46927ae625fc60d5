// Package announce makes this node answer ARP (IPv4) and NDP (IPv6) for the external IPs it owns,
// on chosen interfaces, after probing that no other host holds them, with gratuitous bursts on takeover.
package announce

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Config tunes the announcer.
type Config struct {
	// Allow, when not empty, limits announcing to these interface names on this node.
	Allow []string
	// ProbeTimeout is how long a probe listens for another host answering for an IP.
	ProbeTimeout time.Duration
	// RetryConflict is how long a refused IP waits before it is probed again.
	RetryConflict time.Duration
	// Gratuitous are the offsets after a takeover at which gratuitous announcements go out.
	Gratuitous []time.Duration
	// IsPeer reports whether a MAC address belongs to another gateway: while an IP moves between
	// gateways the old owner may still answer the new one's probe, which is no conflict.
	IsPeer func(net.HardwareAddr) bool
}

// Defaults: a LAN answers an ARP probe in well under a millisecond, so 200 ms (two probes) is
// generous yet keeps a takeover fast. A Linux 6.18 client takes a gratuitous ARP request at once,
// even within locktime (1 s) of the entry's last change and with arp_accept 0 (checked in a
// namespace); other stacks hold an entry for locktime, and a frame can be lost, so the burst spreads
// over 5 s: some of it lands outside every locktime.
var (
	DefaultProbeTimeout  = 200 * time.Millisecond
	DefaultRetryConflict = 10 * time.Second
	DefaultGratuitous    = []time.Duration{0, 400 * time.Millisecond, 1200 * time.Millisecond, 2500 * time.Millisecond, 5 * time.Second}
)

// Claim asks for one IP to be announced from this node.
type Claim struct {
	IP netip.Addr
	// Interfaces names the interfaces allowed by the L2Advertisement; nil means SelectLinks' default.
	Interfaces []string
	// Probe asks to check that no other host answers for IP before claiming it. The caller skips it
	// when taking the IP over from another gateway it saw announce it; such a claim also overrides
	// an earlier refusal.
	Probe bool
}

// Conflict is an IP another host already answers for, so it was not claimed.
type Conflict struct {
	IP        netip.Addr
	Interface string
	MAC       net.HardwareAddr
}

// Announcer answers for the claimed IPs. Set is called from one goroutine at a time.
type Announcer struct {
	cfg     Config
	logger  klog.Logger
	metrics *Metrics

	mu        sync.Mutex
	links     map[string]*link
	announced map[netip.Addr][]string // IP -> interfaces answering for it
	refused   map[netip.Addr]Conflict
	refusedAt map[netip.Addr]time.Time
}

// New returns an idle Announcer; Set starts it.
func New(cfg Config, logger klog.Logger, metrics *Metrics) *Announcer {
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.RetryConflict <= 0 {
		cfg.RetryConflict = DefaultRetryConflict
	}
	if cfg.Gratuitous == nil {
		cfg.Gratuitous = DefaultGratuitous
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	return &Announcer{
		cfg: cfg, logger: logger.WithName("announce"), metrics: metrics,
		links: map[string]*link{}, announced: map[netip.Addr][]string{},
		refused: map[netip.Addr]Conflict{}, refusedAt: map[netip.Addr]time.Time{},
	}
}

// Set makes the claimed IPs, and only they, answered for. IPs no longer claimed stop being answered
// before anything else happens. New IPs are probed (when asked) and announced with a gratuitous
// burst. It returns the IPs refused because another host answers for them (each reported once per
// probe), and an error when some interface could not be served (the rest is applied).
func (a *Announcer) Set(claims []Claim) ([]Conflict, error) {
	links, err := Links()
	if err != nil {
		return nil, err
	}
	byName := map[string]Link{}
	for _, l := range links {
		byName[l.Name] = l
	}
	now := time.Now()
	want := map[string]map[netip.Addr]bool{}
	probe := map[netip.Addr]bool{}
	a.mu.Lock()
	for _, c := range claims {
		if _, refused := a.refused[c.IP]; refused {
			// A takeover from a gateway (no probe asked) overrides a refusal: the answer that
			// caused it most likely came from that gateway before its MAC was known.
			if c.Probe && now.Sub(a.refusedAt[c.IP]) < a.cfg.RetryConflict {
				continue
			}
			delete(a.refused, c.IP)
			delete(a.refusedAt, c.IP)
			// Time to look again whether the other host is gone.
			probe[c.IP] = c.Probe
		}
		for _, name := range SelectLinks(links, c.IP, c.Interfaces, a.cfg.Allow) {
			if want[name] == nil {
				want[name] = map[netip.Addr]bool{}
			}
			want[name][c.IP] = true
		}
		if c.Probe && len(a.announced[c.IP]) == 0 {
			probe[c.IP] = true
		}
	}
	a.mu.Unlock()

	var errs []error
	// Stop answering first: losing ownership must take effect at once.
	a.mu.Lock()
	for name, l := range a.links {
		if bl, ok := byName[name]; !ok || bl.Index != l.ifi.Index || !bytes.Equal(bl.MAC, l.ifi.HardwareAddr) || len(want[name]) == 0 {
			l.close()
			delete(a.links, name)
			continue
		}
		keep := map[netip.Addr]bool{}
		for ip := range *l.answering.Load() {
			if want[name][ip] {
				keep[ip] = true
			}
		}
		if err := l.setAnswering(keep); err != nil {
			errs = append(errs, err)
		}
	}
	a.mu.Unlock()

	// Open what the new IPs need.
	for name, ips := range want {
		l := a.links[name]
		if l == nil {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				errs = append(errs, fmt.Errorf("looking up interface %s: %w", name, err))
				delete(want, name)
				continue
			}
			l = newLink(ifi, a.logger, a.metrics)
			a.mu.Lock()
			a.links[name] = l
			a.mu.Unlock()
		}
		for ip := range ips {
			if err := l.ensure(ip); err != nil {
				errs = append(errs, err)
				delete(ips, ip)
			}
		}
	}

	conflicts := a.probeAll(want, probe)
	a.mu.Lock()
	for _, c := range conflicts {
		a.refused[c.IP], a.refusedAt[c.IP] = c, now
		a.metrics.Conflicts.WithLabelValues(protocol(c.IP)).Inc()
		for _, ips := range want {
			delete(ips, c.IP)
		}
	}
	a.mu.Unlock()

	announced := map[netip.Addr][]string{}
	a.mu.Lock()
	for name, ips := range want {
		l := a.links[name]
		if l == nil {
			continue
		}
		old := *l.answering.Load()
		if err := l.setAnswering(ips); err != nil {
			errs = append(errs, err)
		}
		for ip := range ips {
			announced[ip] = append(announced[ip], name)
			if !old[ip] {
				a.logger.Info("Announcing IP", "ip", ip, "interface", name)
				l.burst(ip, a.cfg.Gratuitous)
			}
		}
	}
	for ip, names := range a.announced {
		if len(announced[ip]) == 0 {
			a.logger.Info("Stopped announcing IP", "ip", ip, "interfaces", names)
		}
	}
	for ip := range announced {
		slices.Sort(announced[ip])
	}
	a.announced = announced
	a.mu.Unlock()
	return conflicts, errors.Join(errs...)
}

// probeAll probes the IPs in probe on the links that would answer for them, all at once, and
// returns those another (non-gateway) host answered for.
func (a *Announcer) probeAll(want map[string]map[netip.Addr]bool, probe map[netip.Addr]bool) []Conflict {
	type watch struct {
		ip   netip.Addr
		link *link
		ch   <-chan net.HardwareAddr
	}
	var watches []watch
	for name, ips := range want {
		for ip := range ips {
			if !probe[ip] {
				continue
			}
			l := a.links[name]
			ch, stop := l.watch(ip)
			defer stop()
			watches = append(watches, watch{ip, l, ch})
		}
	}
	if len(watches) == 0 {
		return nil
	}
	// Two probes half the timeout apart, in case one is lost.
	for round := range 2 {
		if round > 0 {
			time.Sleep(a.cfg.ProbeTimeout / 2)
		}
		for _, w := range watches {
			if err := w.link.probe(w.ip); err != nil {
				a.logger.Error(err, "Probing IP", "ip", w.ip, "interface", w.link.name)
			}
		}
	}
	time.Sleep(a.cfg.ProbeTimeout / 2)
	var out []Conflict
	seen := map[netip.Addr]bool{}
	for _, w := range watches {
	drain:
		for {
			select {
			case mac := <-w.ch:
				if seen[w.ip] || a.cfg.IsPeer != nil && a.cfg.IsPeer(mac) {
					continue
				}
				seen[w.ip] = true
				a.logger.Info("Another host answers for the IP; not announcing it", "ip", w.ip, "interface", w.link.name, "mac", mac)
				out = append(out, Conflict{IP: w.ip, Interface: w.link.name, MAC: mac})
			default:
				break drain
			}
		}
	}
	slices.SortFunc(out, func(x, y Conflict) int { return x.IP.Compare(y.IP) })
	return out
}

func protocol(ip netip.Addr) string {
	if ip.Is4() {
		return "arp"
	}
	return "ndp"
}

// Announced returns, for each IP answered for, the interfaces it is answered on.
func (a *Announcer) Announced() map[netip.Addr][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.announced)
}

// Refused returns the IPs held back because another host answered for them.
func (a *Announcer) Refused() map[netip.Addr]Conflict {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.refused)
}

// Close stops answering for everything and releases the sockets.
func (a *Announcer) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, l := range a.links {
		l.close()
		delete(a.links, name)
	}
	a.announced = map[netip.Addr][]string{}
}

// Reannounce sends a gratuitous burst for every IP answered for, except those in skip. After a
// membership change a client may have believed another gateway for a moment (two gateways that
// started apart both claimed an IP); the true owner's fresh burst corrects it.
func (a *Announcer) Reannounce(skip map[netip.Addr]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.links {
		for ip := range *l.answering.Load() {
			if !skip[ip] {
				l.burst(ip, a.cfg.Gratuitous)
			}
		}
	}
}
