// Package member runs the gossip (hashicorp/memberlist) among the gateways, one member per node named
// after its Kubernetes node, and reports which nodes' gateways are live, fast enough to fail over in under a second.
package member

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"k8s.io/klog/v2"
)

// Config is how the gossip listens and whom it trusts.
type Config struct {
	// BindAddr and BindPort are where memberlist listens (UDP and TCP).
	BindAddr string
	BindPort int
	// AdvertiseAddr is the address other members reach this one at; Start's argument when empty.
	AdvertiseAddr string
	// SecretKey, when set, encrypts and authenticates the gossip (AES, 16, 24 or 32 bytes).
	SecretKey []byte
	// RejoinInterval is how often peers that are not members are tried again.
	RejoinInterval time.Duration
	// AloneGrace is how long a member that knows of peers but reaches none waits before it counts
	// as ready alone. When a whole cluster starts at once the first joins fail; serving alone at
	// once would make every gateway announce every IP for a moment.
	AloneGrace time.Duration
}

// Timing tuned for one LAN, where a round trip is well under a millisecond:
//   - every member probes one other every ProbeInterval (100 ms) and waits ProbeTimeout (50 ms) for
//     the ack before asking IndirectChecks others to probe too; TCP fallback pings run alongside;
//   - a member that fails a probe round is suspected; the suspicion times out after SuspicionMult x
//     max(1, log10(members)) x ProbeInterval, 300 ms below 10 members and 600 ms at 100; with
//     SuspicionMaxTimeoutMult 1 confirmations cannot stretch it;
//   - the dead verdict is gossiped every GossipInterval (50 ms) to GossipNodes members.
//
// A dead gateway is thus declared dead about 0.4-0.6 s after it stops answering (the next probe of
// it, one failed round, the suspicion timeout). The price: about 10 probes and 20 gossip packets per
// second per member, and a member stalled for ~0.4 s (CPU starvation, a long pause) is declared dead
// and its IPs move. memberlist's awareness (Lifeguard) slows the probing of a member that notices
// it is itself slow, which damps the false verdicts that stalls would otherwise cause.
const (
	probeInterval  = 100 * time.Millisecond
	probeTimeout   = 50 * time.Millisecond
	suspicionMult  = 3
	gossipInterval = 50 * time.Millisecond
	gossipNodes    = 4
)

// ParseSecret turns a shared secret of any length (a Secret's value, surrounding white space
// ignored) into memberlist's AES-256 key with SHA-256 (MetalLB's speaker also derives its key from the
// secret, but not byte-compatibly: the two cannot share a gossip), so users need not
// produce a key of an exact length.
func ParseSecret(b []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, errors.New("gossip secret is empty")
	}
	sum := sha256.Sum256(trimmed)
	return sum[:], nil
}

// ReadSecretFile reads a gossip key from path (see ParseSecret).
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading gossip secret: %w", err)
	}
	return ParseSecret(b)
}

// Member is this gateway's membership in the gossip. It implements cluster.Liveness.
type Member struct {
	cfg    Config
	name   string
	logger klog.Logger

	changed chan struct{}
	kick    chan struct{}

	mu       sync.Mutex
	ml       *memberlist.Memberlist
	live     map[string][]byte // node name -> its metadata
	peers    map[string]string // node name -> address to join it at
	meta     []byte
	firstTry time.Time // end of the first join round
	// wasReady makes readiness sticky: once joined (or alone after the grace), members dying later
	// must not stop this one from serving.
	wasReady bool
}

// New returns a Member for node name; Start makes it take part.
func New(cfg Config, name string, logger klog.Logger) *Member {
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 5 * time.Second
	}
	if cfg.AloneGrace <= 0 {
		cfg.AloneGrace = 3 * time.Second
	}
	return &Member{
		cfg:     cfg,
		name:    name,
		logger:  logger.WithName("member"),
		changed: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
	}
}

// SetMeta sets the metadata other members see for this one (at most 512 bytes); it takes effect at
// Start or, when already started, with the next gossip.
func (m *Member) SetMeta(meta []byte) error {
	if len(meta) > memberlist.MetaMaxSize {
		return fmt.Errorf("member metadata is %d bytes, more than %d", len(meta), memberlist.MetaMaxSize)
	}
	m.mu.Lock()
	changed := !bytes.Equal(m.meta, meta)
	m.meta = slices.Clone(meta)
	ml := m.ml
	m.mu.Unlock()
	if changed && ml != nil {
		if err := ml.UpdateNode(time.Second); err != nil {
			return fmt.Errorf("announcing new member metadata: %w", err)
		}
	}
	return nil
}

// Start creates the memberlist, listening on the configured address; advertise is the address
// others reach this member at when Config.AdvertiseAddr is empty.
func (m *Member) Start(advertise string) error {
	c := memberlist.DefaultLANConfig()
	c.Name = m.name
	c.BindAddr, c.BindPort = m.cfg.BindAddr, m.cfg.BindPort
	c.AdvertiseAddr, c.AdvertisePort = m.cfg.AdvertiseAddr, m.cfg.BindPort
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = advertise
	}
	if m.cfg.BindPort == 0 {
		// An ephemeral port: advertise the one memberlist picks.
		c.AdvertisePort = 0
	}
	c.ProbeInterval, c.ProbeTimeout = probeInterval, probeTimeout
	c.SuspicionMult, c.SuspicionMaxTimeoutMult = suspicionMult, 1
	c.GossipInterval, c.GossipNodes = gossipInterval, gossipNodes
	c.TCPTimeout = 2 * time.Second
	// A gateway restarted with a new address (a pod IP) takes its name back at once.
	c.DeadNodeReclaimTime = time.Second
	c.SecretKey = m.cfg.SecretKey
	c.Events = (*events)(m)
	c.Delegate = (*delegate)(m)
	c.Logger = log.New(logWriter{m.logger}, "", 0)

	ml, err := memberlist.Create(c)
	if err != nil {
		return fmt.Errorf("starting memberlist on %s:%d: %w", c.BindAddr, c.BindPort, err)
	}
	m.mu.Lock()
	m.ml = ml
	m.mu.Unlock()
	m.logger.Info("Gossip started", "node", m.name, "addr", net.JoinHostPort(c.AdvertiseAddr, strconv.Itoa(int(ml.LocalNode().Port))))
	return nil
}

// Port is the port memberlist listens on (useful with BindPort 0); 0 before Start.
func (m *Member) Port() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ml == nil {
		return 0
	}
	return int(m.ml.LocalNode().Port)
}

// SetPeers tells the member where the other gateways may be (node name -> host:port); those that are
// not members are joined by Run. It never blocks.
func (m *Member) SetPeers(peers map[string]string) {
	m.mu.Lock()
	same := maps.Equal(m.peers, peers)
	m.peers = maps.Clone(peers)
	m.mu.Unlock()
	if !same {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// Run joins the peers that are not members, at once when they change and every RejoinInterval
// (healing partitions memberlist gave up on), until ctx ends. It then shuts memberlist down without a
// leave message: a gateway that stops is dead to the others, and its IPs move.
func (m *Member) Run(ctx context.Context) {
	defer m.Shutdown()
	signalled := false
	for {
		m.joinMissing()
		ready := m.Ready() == nil
		if ready && !signalled {
			// Readiness changed: whoever waits for it learns through Changed.
			m.signal()
			signalled = true
		}
		// Until ready, retry often: the peers may be starting right now.
		wait := m.cfg.RejoinInterval
		if !ready {
			wait = min(wait, 250*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-time.After(wait):
		}
	}
}

func (m *Member) joinMissing() {
	m.mu.Lock()
	ml := m.ml
	var addrs []string
	for name, addr := range m.peers {
		if _, ok := m.live[name]; !ok && name != m.name {
			addrs = append(addrs, addr)
		}
	}
	m.mu.Unlock()
	if ml == nil {
		return
	}
	slices.Sort(addrs)
	if len(addrs) > 0 {
		if n, err := ml.Join(addrs); err != nil {
			m.logger.V(2).Info("Some gossip peers did not answer", "peers", addrs, "joined", n, "err", err)
		}
	}
	m.mu.Lock()
	if m.firstTry.IsZero() {
		m.firstTry = time.Now()
	}
	m.mu.Unlock()
}

// Ready reports nil once the member has joined another, or knows of no peer, or has tried its peers
// for AloneGrace without reaching any (it is then alone, as a lone survivor is).
func (m *Member) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	others := 0
	for name := range m.peers {
		if name != m.name {
			others++
		}
	}
	switch {
	case m.ml == nil:
		return errors.New("gossip not started")
	case m.wasReady || len(m.live) >= 2:
	case m.firstTry.IsZero():
		return errors.New("gossip has not tried to join its peers yet")
	case others > 0 && time.Since(m.firstTry) < m.cfg.AloneGrace:
		return fmt.Errorf("none of %d gossip peers answered yet; serving alone in %v if none does", others, (m.cfg.AloneGrace - time.Since(m.firstTry)).Round(time.Millisecond))
	}
	m.wasReady = true
	return nil
}

// LiveNodes returns the nodes whose gateway the gossip considers alive (this one included); nil
// before Start.
func (m *Member) LiveNodes() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ml == nil {
		return nil
	}
	out := make(map[string]bool, len(m.live))
	for n := range m.live {
		out[n] = true
	}
	return out
}

// Meta returns the metadata of each live member.
func (m *Member) Meta() map[string][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.live)
}

// Changed is signalled whenever the live set or a member's metadata changes.
func (m *Member) Changed() <-chan struct{} { return m.changed }

// Shutdown stops gossiping without saying goodbye, as a crash would.
func (m *Member) Shutdown() error {
	m.mu.Lock()
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return nil
	}
	return ml.Shutdown()
}

// Leave tells the others this member goes, so they drop it at once instead of after a probe timeout.
func (m *Member) Leave(timeout time.Duration) error {
	m.mu.Lock()
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return nil
	}
	return ml.Leave(timeout)
}

func (m *Member) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// events receives memberlist's membership changes. memberlist calls it with its node lock held, so
// it must not call back into memberlist.
type events Member

func (e *events) NotifyJoin(n *memberlist.Node) {
	m := (*Member)(e)
	m.logger.Info("Gateway joined", "node", n.Name, "addr", n.Address())
	m.setLive(n)
}

func (m *Member) setLive(n *memberlist.Node) {
	m.mu.Lock()
	if m.live == nil {
		m.live = map[string][]byte{}
	}
	m.live[n.Name] = slices.Clone(n.Meta)
	m.mu.Unlock()
	m.signal()
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	m := (*Member)(e)
	m.mu.Lock()
	delete(m.live, n.Name)
	m.mu.Unlock()
	m.logger.Info("Gateway dead or left", "node", n.Name, "addr", n.Address(), "state", n.State)
	m.signal()
}

func (e *events) NotifyUpdate(n *memberlist.Node) { (*Member)(e).setLive(n) }

// delegate hands memberlist this member's metadata; baregate sends no user messages.
type delegate Member

func (d *delegate) NodeMeta(limit int) []byte {
	m := (*Member)(d)
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.meta) > limit {
		return nil
	}
	return slices.Clone(m.meta)
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// logWriter sends memberlist's log lines to klog at verbosity 3; they are chatty at LAN timings.
type logWriter struct{ logger klog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.logger.V(3).Info(string(bytes.TrimSpace(p)))
	return len(p), nil
}
