package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// The lab's address plan (DESIGN.md). Node i (1-based) is 192.0.2.(10+i) with pods in 198.18.i.0/24.
const (
	LANv4          = "192.0.2.0/24"
	LANv6          = "2001:db8:0:1::/64"
	ControlPlaneIP = "192.0.2.2"
	PoolV4         = "203.0.113.0/24"
	PoolV6         = "2001:db8:0:2::/64"
	ExternalIPsV4  = "198.51.100.0/24"
	ExternalIPsV6  = "2001:db8:0:3::/64"
	PodBridge      = "cbr0"
	// MaxNodes and MaxClients are what the address plan has room for.
	MaxNodes   = 9
	MaxClients = 19
)

// NodeIPs are node i's LAN addresses (IPv4, IPv6).
func NodeIPs(i int) (string, string) {
	return fmt.Sprintf("192.0.2.%d", 10+i), fmt.Sprintf("2001:db8:0:1::%d", 10+i)
}

// ClientIPs are client i's LAN addresses (IPv4, IPv6).
func ClientIPs(i int) (string, string) {
	return fmt.Sprintf("192.0.2.%d", 100+i), fmt.Sprintf("2001:db8:0:1::%d", 100+i)
}

// PodCIDRs are node i's pod ranges (IPv4, IPv6).
func PodCIDRs(i int) (string, string) {
	return fmt.Sprintf("198.18.%d.0/24", i), fmt.Sprintf("2001:db8:1:%d::/64", i)
}

// PodGateways are node i's addresses on its pod bridge, the pods' default gateway (IPv4, IPv6).
func PodGateways(i int) (string, string) {
	return fmt.Sprintf("198.18.%d.1", i), fmt.Sprintf("2001:db8:1:%d::1", i)
}

// NodeName is the Kubernetes name of node i.
func NodeName(i int) string { return "node" + strconv.Itoa(i) }

// ClientName is the host name of client i.
func ClientName(i int) string { return "client" + strconv.Itoa(i) }

// netnsName is the namespace of a lab host ("lan", "cp", "node1", "client1").
func netnsName(id, host string) string { return id + "-" + host }

// ipCmd runs `ip` with args, in the named namespace unless ns is "".
func ipCmd(ctx context.Context, ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// sysctls sets kernel parameters inside a namespace.
func sysctls(ctx context.Context, ns string, kv ...string) error {
	args := append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, kv...)
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("setting %v in %s: %w: %s", kv, ns, err, out)
	}
	return nil
}

// network is the lab's plumbing: a bridge in its own namespace (the LAN switch) and one namespace per
// host, joined by veth pairs whose switch ends are named after the host.
type network struct {
	id      string
	nodes   int
	clients int
}

func (n network) ns(host string) string { return netnsName(n.id, host) }

func (n network) hosts() []string {
	hs := []string{"cp"}
	for i := 1; i <= n.nodes; i++ {
		hs = append(hs, NodeName(i))
	}
	for i := 1; i <= n.clients; i++ {
		hs = append(hs, ClientName(i))
	}
	return hs
}

// up creates the namespaces, the LAN, the nodes' pod bridges and the routes.
func (n network) up(ctx context.Context) error {
	lan := n.ns("lan")
	if err := ipCmd(ctx, "", "netns", "add", lan); err != nil {
		return err
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, lan, s...); err != nil {
			return err
		}
	}
	for _, h := range n.hosts() {
		if err := n.attach(ctx, h); err != nil {
			return fmt.Errorf("attaching %s to the lab LAN: %w", h, err)
		}
	}
	if err := n.addresses(ctx); err != nil {
		return err
	}
	for i := 1; i <= n.nodes; i++ {
		if err := n.podBridge(ctx, i); err != nil {
			return fmt.Errorf("creating the pod bridge of %s: %w", NodeName(i), err)
		}
	}
	return n.routes(ctx)
}

// attach creates host's namespace and plugs its eth0 into the LAN bridge.
func (n network) attach(ctx context.Context, host string) error {
	ns, lan := n.ns(host), n.ns("lan")
	if err := ipCmd(ctx, "", "netns", "add", ns); err != nil {
		return err
	}
	// No DAD, so IPv6 addresses work at once; hosts forward (nodes route pods, the rest is harmless);
	// loose reverse-path filtering because LB and pod traffic is asymmetric by design.
	if err := sysctls(ctx, ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
		return err
	}
	steps := []struct {
		ns   string
		args []string
	}{
		{lan, []string{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns}},
		{lan, []string{"link", "set", host, "master", "br0", "up"}},
		{ns, []string{"link", "set", "lo", "up"}},
		{ns, []string{"link", "set", "eth0", "up"}},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s.ns, s.args...); err != nil {
			return err
		}
	}
	return nil
}

func (n network) addresses(ctx context.Context) error {
	add := func(host, v4, v6 string) error {
		if err := ipCmd(ctx, n.ns(host), "addr", "add", v4+"/24", "dev", "eth0"); err != nil {
			return err
		}
		return ipCmd(ctx, n.ns(host), "addr", "add", v6+"/64", "dev", "eth0", "nodad")
	}
	if err := add("cp", ControlPlaneIP, "2001:db8:0:1::2"); err != nil {
		return err
	}
	for i := 1; i <= n.nodes; i++ {
		v4, v6 := NodeIPs(i)
		if err := add(NodeName(i), v4, v6); err != nil {
			return err
		}
	}
	for i := 1; i <= n.clients; i++ {
		v4, v6 := ClientIPs(i)
		if err := add(ClientName(i), v4, v6); err != nil {
			return err
		}
	}
	return nil
}

func (n network) podBridge(ctx context.Context, i int) error {
	ns := n.ns(NodeName(i))
	gw4, gw6 := PodGateways(i)
	// A bridge without its own MAC takes the lowest of its ports' and changes it as pod veths come and
	// go, leaving the pods' cached neighbour entry for their gateway pointing nowhere: traffic from off
	// the node then dies until something re-ARPs. A fixed MAC keeps the gateway where the pods think.
	mac := fmt.Sprintf("02:42:c6:12:%02x:01", i)
	for _, s := range [][]string{
		{"link", "add", PodBridge, "address", mac, "type", "bridge"},
		{"addr", "add", gw4 + "/24", "dev", PodBridge},
		{"addr", "add", gw6 + "/64", "dev", PodBridge, "nodad"},
		{"link", "set", PodBridge, "up"},
	} {
		if err := ipCmd(ctx, ns, s...); err != nil {
			return err
		}
	}
	return nil
}

// routes: every node reaches the other nodes' pods through them; the control plane and the clients reach
// all pods (webhooks, pods calling the API server, a flat routed network as many bare-metal sites have);
// clients find LB IPs on the LAN by ARP/NDP, as on a real
// L2 segment, and send ExternalIPs to node 1, as a router configured by hand would. Nodes send Service
// ClusterIPs towards the LAN so that the forwarding rules on the node see them at all. No namespace gets
// a default route: nothing leaves the lab.
func (n network) routes(ctx context.Context) error {
	type route struct{ host, dst, via string }
	var rs []route
	for i := 1; i <= n.nodes; i++ {
		p4, p6 := PodCIDRs(i)
		v4, v6 := NodeIPs(i)
		rs = append(rs, route{"cp", p4, v4}, route{"cp", p6, v6})
		for c := 1; c <= n.clients; c++ {
			rs = append(rs, route{ClientName(c), p4, v4}, route{ClientName(c), p6, v6})
		}
		for j := 1; j <= n.nodes; j++ {
			if j != i {
				rs = append(rs, route{NodeName(j), p4, v4}, route{NodeName(j), p6, v6})
			}
		}
	}
	for _, r := range rs {
		if err := ipCmd(ctx, n.ns(r.host), "route", "add", r.dst, "via", r.via); err != nil {
			return err
		}
	}
	var onLink []route
	for i := 1; i <= n.nodes; i++ {
		onLink = append(onLink, route{NodeName(i), ServiceCIDRv4, ""}, route{NodeName(i), ServiceCIDRv6, ""})
	}
	for i := 1; i <= n.clients; i++ {
		onLink = append(onLink, route{ClientName(i), PoolV4, ""}, route{ClientName(i), PoolV6, ""})
	}
	for _, r := range onLink {
		if err := ipCmd(ctx, n.ns(r.host), "route", "add", r.dst, "dev", "eth0"); err != nil {
			return err
		}
	}
	if n.nodes > 0 {
		v4, v6 := NodeIPs(1)
		for i := 1; i <= n.clients; i++ {
			if err := ipCmd(ctx, n.ns(ClientName(i)), "route", "add", ExternalIPsV4, "via", v4); err != nil {
				return err
			}
			if err := ipCmd(ctx, n.ns(ClientName(i)), "route", "add", ExternalIPsV6, "via", v6); err != nil {
				return err
			}
		}
	}
	return nil
}

// setLink cuts (up=false) or restores a host's cable to the LAN switch.
func (n network) setLink(ctx context.Context, host string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ipCmd(ctx, n.ns("lan"), "link", "set", host, state)
}
