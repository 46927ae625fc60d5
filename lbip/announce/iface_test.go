package announce

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

func TestSelectLinks(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	links := []Link{
		{Name: "lo", Up: true, Prefixes: pfx("127.0.0.1/8", "::1/128")},
		{Name: "eth0", Up: true, Broadcast: true, MAC: mac, Prefixes: pfx("192.0.2.11/24", "2001:db8:0:1::11/64", "fe80::1/64")},
		{Name: "eth1", Up: true, Broadcast: true, MAC: mac, Prefixes: pfx("203.0.113.250/24")},
		{Name: "down0", Up: false, Broadcast: true, MAC: mac, Prefixes: pfx("203.0.113.251/24")},
		{Name: "cbr0", Up: true, Broadcast: true, MAC: mac, Prefixes: pfx("198.18.1.1/24", "fe80::2/64")},
		{Name: "veth1", Up: true, Broadcast: true, MAC: mac, Prefixes: pfx("fe80::3/64")}, // a bridge port
		{Name: "tun0", Up: true, Prefixes: pfx("198.51.100.1/32")},
	}
	for _, tc := range []struct {
		ip           string
		names, allow []string
		want         string
	}{
		{ip: "203.0.113.7", want: "[eth1]"},                                               // subnet match wins
		{ip: "198.51.100.7", want: "[cbr0 eth0 eth1]"},                                    // no subnet: every link with an IPv4 address
		{ip: "198.51.100.7", allow: []string{"eth0", "veth1"}, want: "[eth0]"},            // limited by the flag
		{ip: "2001:db8:0:2::7", want: "[eth0]"},                                           // link-local only links skipped
		{ip: "203.0.113.7", names: []string{"eth0", "veth1", "lo"}, want: "[eth0 veth1]"}, // L2Advertisement names
		{ip: "203.0.113.7", names: []string{"down0", "tun0"}, want: "[]"},
		{ip: "203.0.113.7", names: []string{"eth0", "eth1"}, allow: []string{"eth1"}, want: "[eth1]"},
	} {
		if got := fmt.Sprint(SelectLinks(links, netip.MustParseAddr(tc.ip), tc.names, tc.allow)); got != tc.want {
			t.Errorf("SelectLinks(%s, names %v, allow %v) = %s, want %s", tc.ip, tc.names, tc.allow, got, tc.want)
		}
	}
}
