package announce

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/baregate/baregate/lbip/internal/nettest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2/ktesting"
)

const (
	vip4 = "203.0.113.7"
	vip6 = "2001:db8:0:2::7"
)

// lanClient adds a client on br0 that reaches the pools on-link, as a LAN host configured for
// them does.
func lanClient(l *nettest.Lab, name, br, addr4, addr6 string) string {
	ns, _ := l.Host(name, br, "eth0", addr4, addr6)
	l.IP(ns, "route", "add", "203.0.113.0/24", "dev", "eth0")
	l.IP(ns, "-6", "route", "add", "2001:db8:0:2::/64", "dev", "eth0")
	return ns
}

// gateway adds a node namespace serving the VIPs through DNAT, and an Announcer run in it.
func gateway(t *testing.T, l *nettest.Lab, name, br, addr4, addr6 string, cfg Config) (string, net.HardwareAddr, *Announcer, *Metrics) {
	ns, mac := l.Host(name, br, "eth0", addr4+"/24", addr6+"/64")
	l.ServeName(ns, name, vip4, addr4, vip6, addr6)
	logger, _ := ktesting.NewTestContext(t)
	m := NewMetrics(nil)
	a := New(cfg, logger, m)
	t.Cleanup(a.Close)
	return ns, mac, a, m
}

func set(t *testing.T, ns string, a *Announcer, claims ...Claim) []Conflict {
	t.Helper()
	var conflicts []Conflict
	var err error
	nettest.InNS(t, ns, func() { conflicts, err = a.Set(claims) })
	if err != nil {
		t.Fatalf("Set in %s: %v", ns, err)
	}
	return conflicts
}

func claims(probe bool, ifaces []string, ips ...string) []Claim {
	var out []Claim
	for _, ip := range ips {
		out = append(out, Claim{IP: netip.MustParseAddr(ip), Probe: probe, Interfaces: ifaces})
	}
	return out
}

// TestAnswersARPAndNDP: a client resolves both VIPs to the owner's MAC through its own kernel's
// ARP/NDP and connects; the VIPs are on no interface of the owner, whose DNAT rule takes the traffic.
func TestAnswersARPAndNDP(t *testing.T) {
	l := nettest.New(t)
	client := lanClient(l, "c", "br0", "192.0.2.101/24", "2001:db8:0:1::101/64")
	ns, mac, a, m := gateway(t, l, "a", "br0", "192.0.2.11", "2001:db8:0:1::11", Config{})

	if c := set(t, ns, a, claims(true, nil, vip4, vip6)...); len(c) != 0 {
		t.Fatalf("conflicts on an empty LAN: %v", c)
	}
	if got := l.IP(ns, "addr", "show"); bytes.Contains([]byte(got), []byte(vip4)) {
		t.Fatalf("the VIP was put on an interface, which the design avoids:\n%s", got)
	}
	for _, addr := range []string{vip4 + ":80", "[" + vip6 + "]:80"} {
		got, err := nettest.Fetch(t, client, addr, 5*time.Second)
		if err != nil || got != "a" {
			t.Fatalf("fetching %s: %q, %v; want a", addr, got, err)
		}
	}
	for _, vip := range []string{vip4, vip6} {
		if got := l.NeighMAC(client, vip); got != mac.String() {
			t.Errorf("client's neighbour entry for %s is %q, want the owner's %s", vip, got, mac)
		}
	}
	for _, proto := range []string{"arp", "ndp"} {
		if testutil.ToFloat64(m.Requests.WithLabelValues(proto)) == 0 || testutil.ToFloat64(m.Replies.WithLabelValues(proto)) == 0 {
			t.Errorf("%s requests/replies not counted", proto)
		}
	}
	if got := a.Announced(); len(got) != 2 || len(got[netip.MustParseAddr(vip4)]) != 1 {
		t.Errorf("Announced() = %v, want both VIPs on eth0", got)
	}

	// Losing ownership: the owner stops answering at once, so a fresh resolution fails.
	set(t, ns, a)
	if got := a.Announced(); len(got) != 0 {
		t.Errorf("Announced() = %v after releasing everything", got)
	}
	l.IP(client, "neigh", "flush", "dev", "eth0")
	if got, err := nettest.Fetch(t, client, vip4+":80", time.Second); err == nil {
		t.Errorf("VIP still reachable (%q) after the owner released it", got)
	}
}

// TestInterfaceFiltering: an IP restricted to eth1 by its L2Advertisement is answered there only.
func TestInterfaceFiltering(t *testing.T) {
	l := nettest.New(t)
	c0 := lanClient(l, "c0", "br0", "192.0.2.101/24", "2001:db8:0:1::101/64")
	c1 := lanClient(l, "c1", "br1", "192.0.2.102/24", "2001:db8:0:1::102/64")
	ns, _, a, _ := gateway(t, l, "a", "br0", "192.0.2.11", "2001:db8:0:1::11", Config{})
	// A second leg on br1, as a node with two NICs.
	nettest.Run(t, "ip", "link", "add", "eth1", "netns", ns, "type", "veth", "peer", "name", "q1", "netns", l.Bridge)
	l.IP(l.Bridge, "link", "set", "q1", "master", "br1", "up")
	l.IP(ns, "link", "set", "eth1", "up")
	l.IP(ns, "addr", "add", "192.0.2.12/24", "dev", "eth1", "nodad")
	l.IP(ns, "addr", "add", "2001:db8:0:1::12/64", "dev", "eth1", "nodad")
	// Replies to c1 must leave through eth1.
	l.IP(ns, "route", "add", "192.0.2.102/32", "dev", "eth1")
	l.IP(ns, "-6", "route", "add", "2001:db8:0:1::102/128", "dev", "eth1")

	set(t, ns, a, claims(true, []string{"eth1"}, vip4, vip6)...)
	for _, addr := range []string{vip4 + ":80", "[" + vip6 + "]:80"} {
		if got, err := nettest.Fetch(t, c1, addr, 5*time.Second); err != nil || got != "a" {
			t.Errorf("from eth1's LAN, %s: %q, %v; want a", addr, got, err)
		}
		if got, err := nettest.Fetch(t, c0, addr, time.Second); err == nil {
			t.Errorf("from eth0's LAN, %s answered %q though only eth1 may announce it", addr, got)
		}
	}
	if got := a.Announced()[netip.MustParseAddr(vip4)]; len(got) != 1 || got[0] != "eth1" {
		t.Errorf("announced on %v, want [eth1]", got)
	}
}

// TestProbeRefusesTakenIP: a host that already has the IP answers the probe, so the IP is refused,
// unless the answer comes from another gateway (a move in progress).
func TestProbeRefusesTakenIP(t *testing.T) {
	l := nettest.New(t)
	_, rogueMAC := l.Host("r", "br0", "eth0", "192.0.2.50/24", "2001:db8:0:1::50/64", vip4+"/32", vip6+"/128")
	ns, macA, a, m := gateway(t, l, "a", "br0", "192.0.2.11", "2001:db8:0:1::11", Config{})

	conflicts := set(t, ns, a, claims(true, nil, vip4, vip6)...)
	if len(conflicts) != 2 || conflicts[0].IP.String() != vip4 || conflicts[1].IP.String() != vip6 {
		t.Fatalf("conflicts = %v, want both VIPs", conflicts)
	}
	for _, c := range conflicts {
		if !bytes.Equal(c.MAC, rogueMAC) {
			t.Errorf("conflict for %s names %s, want the rogue host's %s", c.IP, c.MAC, rogueMAC)
		}
	}
	if got := a.Announced(); len(got) != 0 {
		t.Errorf("announced %v despite the conflict", got)
	}
	if got := len(a.Refused()); got != 2 {
		t.Errorf("%d refused IPs, want 2", got)
	}
	if got := testutil.ToFloat64(m.Conflicts.WithLabelValues("arp")); got != 1 {
		t.Errorf("ARP conflicts counted %v, want 1", got)
	}
	// Within the retry interval the refusal stands without probing again.
	if c := set(t, ns, a, claims(true, nil, vip4)...); len(c) != 0 || len(a.Announced()) != 0 {
		t.Errorf("refused IP re-probed or announced early: conflicts %v, announced %v", c, a.Announced())
	}

	// A takeover from a gateway (no probe) overrides the refusal.
	if c := set(t, ns, a, claims(false, nil, vip4)...); len(c) != 0 || len(a.Announced()) != 1 {
		t.Errorf("takeover after a refusal: conflicts %v, announced %v; want %s announced", c, a.Announced(), vip4)
	}

	// The same answers from MACs the gossip knows as gateways' (the rogue's, and a's, which now
	// announces the IPv4 VIP) are no conflict.
	isPeer := func(mac net.HardwareAddr) bool { return bytes.Equal(mac, rogueMAC) || bytes.Equal(mac, macA) }
	ns2, _, b, _ := gateway(t, l, "b", "br0", "192.0.2.12", "2001:db8:0:1::12", Config{IsPeer: isPeer})
	if c := set(t, ns2, b, claims(true, nil, vip4, vip6)...); len(c) != 0 {
		t.Errorf("answers from a peer gateway counted as conflicts: %v", c)
	}
	if got := len(b.Announced()); got != 2 {
		t.Errorf("peer-aware announcer announces %d IPs, want 2", got)
	}
}

// TestGratuitousTakeover: when a second node takes the IPs over, its gratuitous ARP and unsolicited
// NA repoint the client's existing neighbour entries without the client asking, and traffic follows.
func TestGratuitousTakeover(t *testing.T) {
	l := nettest.New(t)
	client := lanClient(l, "c", "br0", "192.0.2.101/24", "2001:db8:0:1::101/64")
	nsA, macA, a, _ := gateway(t, l, "a", "br0", "192.0.2.11", "2001:db8:0:1::11", Config{})
	nsB, macB, b, mb := gateway(t, l, "b", "br0", "192.0.2.12", "2001:db8:0:1::12", Config{})

	set(t, nsA, a, claims(true, nil, vip4, vip6)...)
	for _, addr := range []string{vip4 + ":80", "[" + vip6 + "]:80"} {
		if got, err := nettest.Fetch(t, client, addr, 5*time.Second); err != nil || got != "a" {
			t.Fatalf("before takeover, %s: %q, %v; want a", addr, got, err)
		}
	}
	for _, vip := range []string{vip4, vip6} {
		if got := l.NeighMAC(client, vip); got != macA.String() {
			t.Fatalf("client's entry for %s is %q, want a's %s", vip, got, macA)
		}
	}

	// a dies silently; b takes over (no probe: it saw a announce the IPs).
	a.Close()
	set(t, nsB, b, claims(false, nil, vip4, vip6)...)
	for _, vip := range []string{vip4, vip6} {
		nettest.Eventually(t, 5*time.Second, func() string {
			if got := l.NeighMAC(client, vip); got != macB.String() {
				return "client's entry for " + vip + " is " + got + ", want b's " + macB.String()
			}
			return ""
		})
	}
	for _, addr := range []string{vip4 + ":80", "[" + vip6 + "]:80"} {
		if got, err := nettest.Fetch(t, client, addr, 5*time.Second); err != nil || got != "b" {
			t.Errorf("after takeover, %s: %q, %v; want b", addr, got, err)
		}
	}
	if got := testutil.ToFloat64(mb.Gratuitous.WithLabelValues("arp")); got < 1 {
		t.Errorf("gratuitous ARPs counted %v", got)
	}
}

// TestAnswersUnicastNUDProbes: a client re-checking a neighbour entry sends unicast solicitations
// to the VIP itself, which the kernel of the owner does not deliver to NDP sockets (the VIP is not a
// local address); they must be answered too, or the entry fails and traffic stalls until it is
// re-resolved by multicast.
func TestAnswersUnicastNUDProbes(t *testing.T) {
	l := nettest.New(t)
	client := lanClient(l, "c", "br0", "192.0.2.101/24", "2001:db8:0:1::101/64")
	// Probe soon after a stale entry is used, instead of after 5 s.
	nettest.Run(t, "ip", "netns", "exec", client, "sysctl", "-qw", "net.ipv6.neigh.eth0.delay_first_probe_time=1", "net.ipv4.neigh.eth0.delay_first_probe_time=1")
	ns, mac, a, m := gateway(t, l, "a", "br0", "192.0.2.11", "2001:db8:0:1::11", Config{})
	set(t, ns, a, claims(true, nil, vip4, vip6)...)

	for _, vip := range []string{vip4, vip6} {
		before := testutil.ToFloat64(m.Requests.WithLabelValues(protocol(netip.MustParseAddr(vip))))
		l.IP(client, "neigh", "replace", vip, "lladdr", mac.String(), "dev", "eth0", "nud", "stale")
		// One datagram makes the kernel use the stale entry and then probe it by unicast.
		nettest.InNS(t, client, func() {
			c, err := net.Dial("udp", net.JoinHostPort(vip, "9"))
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("x"))
			c.Close()
		})
		nettest.Eventually(t, 10*time.Second, func() string {
			out := l.IP(client, "neigh", "show", vip)
			if !strings.Contains(out, "REACHABLE") {
				return "client's entry did not come back REACHABLE through a unicast probe: " + out
			}
			return ""
		})
		if after := testutil.ToFloat64(m.Requests.WithLabelValues(protocol(netip.MustParseAddr(vip)))); after <= before {
			t.Errorf("%s: the unicast probe was not counted as answered", vip)
		}
	}
}

// TestReannounceCorrectsClient: a client that believed another MAC for a VIP (two gateways claimed it
// for a moment) is set right by the owner's Reannounce, for IPv4 and IPv6.
func TestReannounceCorrectsClient(t *testing.T) {
	l := nettest.New(t)
	client := lanClient(l, "c", "br0", "192.0.2.101/24", "2001:db8:0:1::101/64")
	ns, mac, a, _ := gateway(t, l, "a", "br0", "192.0.2.11", "2001:db8:0:1::11", Config{})
	set(t, ns, a, claims(false, nil, vip4, vip6)...)
	// Let the takeover burst of Set finish, so that only Reannounce can correct the client.
	time.Sleep(DefaultGratuitous[len(DefaultGratuitous)-1] + 300*time.Millisecond)
	for _, vip := range []string{vip4, vip6} {
		l.IP(client, "neigh", "replace", vip, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "reachable")
	}
	a.Reannounce(map[netip.Addr]bool{netip.MustParseAddr(vip6): true})
	nettest.Eventually(t, 5*time.Second, func() string {
		if got := l.NeighMAC(client, vip4); got != mac.String() {
			return "client's entry for " + vip4 + " is " + got + ", want " + mac.String()
		}
		return ""
	})
	time.Sleep(DefaultGratuitous[len(DefaultGratuitous)-1] + 300*time.Millisecond)
	if got := l.NeighMAC(client, vip6); got == mac.String() {
		t.Errorf("%s was reannounced though skipped", vip6)
	}
}
