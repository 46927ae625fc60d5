package lab

import (
	"net/netip"
	"strings"
	"testing"
)

func TestOptionsDefaultsAndLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      Options
		wantErr string
		check   func(Options) bool
	}{
		{name: "defaults", in: Options{}, check: func(o Options) bool {
			return o.ID == "lab" && o.Nodes == 2 && o.Clients == 0 && o.Dir == DefaultDir("lab")
		}},
		{name: "nine nodes fit the plan", in: Options{ID: "big", Nodes: 9, Clients: 19}},
		{name: "ten nodes do not", in: Options{Nodes: 10}, wantErr: "room for 1-9"},
		{name: "negative nodes", in: Options{Nodes: -1}, wantErr: "room for 1-9"},
		{name: "too many clients", in: Options{Clients: 20}, wantErr: "room for 0-19"},
		{name: "id with a dash could prefix another lab's names", in: Options{ID: "lab-2"}, wantErr: "lab id"},
		{name: "id starting with a digit", in: Options{ID: "2lab"}, wantErr: "lab id"},
		{name: "id upper case", in: Options{ID: "Lab"}, wantErr: "lab id"},
		{name: "id too long for link names", in: Options{ID: "abcdefghijklm"}, wantErr: "lab id"},
		{name: "id of twelve", in: Options{ID: "abcdefghijkl"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.in
			err := o.setDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("setDefaults() = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("setDefaults() = %v", err)
			}
			if tc.check != nil && !tc.check(o) {
				t.Errorf("setDefaults() gave %+v", o)
			}
		})
	}
}

func FuzzValidID(f *testing.F) {
	for _, s := range []string{"lab", "e2e", "lab-2", "", "a", "Z", "abcdefghijkl", "ab/c", "ä"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !validID(id) {
			return
		}
		// A valid id keeps namespace names usable by `ip netns` and never prefixes another lab's names.
		if strings.ContainsAny(id, "-/. \x00") || len(id) > 12 {
			t.Errorf("validID(%q) = true", id)
		}
	})
}

// TestAddressPlan checks the helpers against DESIGN.md's table: every address in its documentation range.
func TestAddressPlan(t *testing.T) {
	in := func(cidr, addr string) bool {
		return netip.MustParsePrefix(cidr).Contains(netip.MustParseAddr(addr))
	}
	seen := map[string]bool{}
	for i := 1; i <= MaxNodes; i++ {
		v4, v6 := NodeIPs(i)
		g4, g6 := PodGateways(i)
		p4, p6 := PodCIDRs(i)
		for _, c := range []struct{ cidr, addr string }{
			{LANv4, v4}, {LANv6, v6}, {"198.18.0.0/16", g4}, {"2001:db8:1::/48", g6}, {p4, g4}, {p6, g6},
		} {
			if !in(c.cidr, c.addr) {
				t.Errorf("node %d: %s not in %s", i, c.addr, c.cidr)
			}
		}
		for _, a := range []string{v4, v6, p4, p6} {
			if seen[a] {
				t.Errorf("node %d reuses %s", i, a)
			}
			seen[a] = true
		}
	}
	for i := 1; i <= MaxClients; i++ {
		v4, v6 := ClientIPs(i)
		if !in(LANv4, v4) || !in(LANv6, v6) || seen[v4] || seen[v6] {
			t.Errorf("client %d: %s %s outside the LAN or taken", i, v4, v6)
		}
		seen[v4], seen[v6] = true, true
	}
	if seen[ControlPlaneIP] || !in(LANv4, ControlPlaneIP) {
		t.Errorf("control plane %s outside the LAN or taken", ControlPlaneIP)
	}
}
