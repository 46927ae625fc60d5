package announce

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Link is what interface selection needs to know of a network interface.
type Link struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	Up    bool
	// Broadcast is false for loopback and point-to-point links, where ARP/NDP mean nothing.
	Broadcast bool
	Prefixes  []netip.Prefix
}

// Links lists this network namespace's interfaces.
func Links() ([]Link, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	out := make([]Link, 0, len(ifs))
	for _, ifi := range ifs {
		l := Link{
			Name: ifi.Name, Index: ifi.Index, MAC: ifi.HardwareAddr,
			Up:        ifi.Flags&net.FlagUp != 0,
			Broadcast: ifi.Flags&net.FlagBroadcast != 0 && ifi.Flags&net.FlagLoopback == 0,
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", ifi.Name, err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				l.Prefixes = append(l.Prefixes, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()))
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// usable reports whether l can carry ARP/NDP for us at all.
func (l Link) usable() bool {
	return l.Up && l.Broadcast && len(l.MAC) == 6
}

// hasFamilyAddr reports whether l has an address of ip's family other than a link-local one; bridge
// ports and other enslaved links have none, so they are left to their bridge.
func (l Link) hasFamilyAddr(ip netip.Addr) bool {
	return slices.ContainsFunc(l.Prefixes, func(p netip.Prefix) bool {
		return p.Addr().Is4() == ip.Is4() && !p.Addr().IsLinkLocalUnicast()
	})
}

// SelectLinks picks the interfaces to announce ip on.
//
// With names (from the L2Advertisement) it is those, if usable. Otherwise the default is, in order:
// the usable interfaces with an address whose subnet holds ip (the LB pool is carved from the LAN);
// failing that, every usable interface with an address of ip's family (the pool is routed to the
// LAN on-link, as in the lab: the node answers wherever it has an IP presence, and ports of bridges
// and other address-less links are skipped). allow, when not empty, limits either choice (the
// --lbip-interfaces flag).
func SelectLinks(links []Link, ip netip.Addr, names, allow []string) []string {
	ok := func(l Link) bool {
		return l.usable() && (len(allow) == 0 || slices.Contains(allow, l.Name))
	}
	var out []string
	if len(names) > 0 {
		for _, l := range links {
			if ok(l) && slices.Contains(names, l.Name) {
				out = append(out, l.Name)
			}
		}
		return sorted(out)
	}
	for _, l := range links {
		if ok(l) && slices.ContainsFunc(l.Prefixes, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			out = append(out, l.Name)
		}
	}
	if len(out) > 0 {
		return sorted(out)
	}
	for _, l := range links {
		if ok(l) && l.hasFamilyAddr(ip) {
			out = append(out, l.Name)
		}
	}
	return sorted(out)
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
