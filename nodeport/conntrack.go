package nodeport

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// staleFlow is a UDP frontend an endpoint no longer serves: its conntrack entries would keep sending
// a DNS-like client's datagrams to the dead endpoint until they time out.
type staleFlow struct {
	// FrontIP and FrontPort are the original destination; FrontIP is invalid for a NodePort (any
	// local address).
	FrontIP   netip.Addr
	FrontPort uint16
	Endpoint  netip.AddrPort
}

// staleUDP lists the endpoints that left each UDP frontend between two syncs.
func staleUDP(old, cur map[string]map[string]bool) []staleFlow {
	var out []staleFlow
	for _, fe := range sortedKeys(old) {
		ipStr, portStr, _ := cutLast(fe, ":")
		ip, _ := netip.ParseAddr(strings.Trim(ipStr, "[]"))
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			continue
		}
		for _, ep := range sortedKeys(old[fe]) {
			if cur[fe][ep] {
				continue
			}
			if ap, err := netip.ParseAddrPort(ep); err == nil {
				out = append(out, staleFlow{FrontIP: ip, FrontPort: uint16(port), Endpoint: ap})
			}
		}
	}
	return out
}

// udpFlowFilter matches the conntrack entries of stale flows: UDP, originally addressed to the
// frontend, answered by the endpoint.
type udpFlowFilter struct {
	stale []staleFlow
}

func (f udpFlowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != 17 {
		return false
	}
	dst, _ := netip.AddrFromSlice(flow.Forward.DstIP)
	reply, _ := netip.AddrFromSlice(flow.Reverse.SrcIP)
	replyAP := netip.AddrPortFrom(reply.Unmap(), flow.Reverse.SrcPort)
	return slices.ContainsFunc(f.stale, func(s staleFlow) bool {
		return s.Endpoint == replyAP && s.FrontPort == flow.Forward.DstPort &&
			(!s.FrontIP.IsValid() || s.FrontIP == dst.Unmap())
	})
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// deleteStaleUDP deletes the conntrack entries of stale flows, through netlink, or the conntrack tool
// when netlink fails (old kernels without the dump filter support netlink needs are rare, but the
// tool is what operators already trust).
func deleteStaleUDP(stale []staleFlow) (uint, error) {
	if len(stale) == 0 {
		return 0, nil
	}
	var total uint
	var errs []error
	for _, fam := range []netlink.InetFamily{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, udpFlowFilter{stale})
		total += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		if toolErr := conntrackTool(stale); toolErr != nil {
			return total, fmt.Errorf("deleting stale UDP conntrack entries: netlink: %w; conntrack tool: %v", err, toolErr)
		}
	}
	return total, nil
}

func conntrackTool(stale []staleFlow) error {
	var errs []error
	for _, s := range stale {
		args := []string{"-D", "-p", "udp", "--reply-src", s.Endpoint.Addr().String(), "--reply-port-src", fmt.Sprint(s.Endpoint.Port())}
		if s.Endpoint.Addr().Is6() {
			args = append(args, "-f", "ipv6")
		}
		if s.FrontIP.IsValid() {
			args = append(args, "--orig-dst", s.FrontIP.String())
		}
		args = append(args, "--orig-port-dst", fmt.Sprint(s.FrontPort))
		out, err := exec.Command("conntrack", args...).CombinedOutput()
		// conntrack exits 1 when nothing matched, which is not a failure here.
		if err != nil && !strings.Contains(string(out), "0 flow entries") {
			errs = append(errs, fmt.Errorf("conntrack %s: %w: %s", strings.Join(args, " "), err, out))
		}
	}
	return errors.Join(errs...)
}
