package announce

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
)

// Unicast neighbor solicitations (a client re-checking its entry for a VIP) are addressed to the VIP
// itself. The VIP is on no interface, so the kernel drops them before any ICMPv6 socket sees them;
// a packet socket filtered to exactly those catches them instead.

const (
	etherTypeIPv6 = 0x86dd
	ethLen        = 14
	ip6Len        = 40
)

// unicastNSFilter passes only ICMPv6 neighbor solicitations to a non-multicast destination (the
// multicast ones reach the NDP socket), assuming no extension headers, which NDP never carries.
func unicastNSFilter() ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: ethLen + 6, Size: 1}, // next header
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 58, SkipTrue: 4},
		bpf.LoadAbsolute{Off: ethLen + 24, Size: 1}, // first byte of the destination
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0xff, SkipTrue: 2},
		bpf.LoadAbsolute{Off: ethLen + ip6Len, Size: 1}, // ICMPv6 type
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 135, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 0xffff},
	})
}

func (l *link) openUnicastNS() (*packet.Conn, error) {
	c, err := packet.Listen(l.ifi, packet.Raw, etherTypeIPv6, nil)
	if err != nil {
		return nil, fmt.Errorf("opening IPv6 packet socket on %s: %w", l.name, err)
	}
	prog, err := unicastNSFilter()
	if err == nil {
		err = c.SetBPF(prog)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("filtering IPv6 packet socket on %s: %w", l.name, err)
	}
	return c, nil
}

func (l *link) readUnicastNS(c *packet.Conn) {
	defer l.wg.Done()
	buf := make([]byte, 1600)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			l.readFailed("NDP (unicast)", err)
			return
		}
		src, dst, ns, ok := parseUnicastNS(buf[:n])
		if !ok || bytes.Equal(src, l.ifi.HardwareAddr) || !l.answers(ns.TargetAddress) || dst.ip != ns.TargetAddress {
			continue
		}
		l.metrics.Requests.WithLabelValues("ndp").Inc()
		frame, err := l.unicastNA(ns.TargetAddress, dst.from, src)
		if err == nil {
			_, err = c.WriteTo(frame, &packet.Addr{HardwareAddr: src})
		}
		if err != nil {
			l.logger.Error(err, "Answering unicast neighbor solicitation", "ip", ns.TargetAddress, "to", dst.from)
			continue
		}
		l.metrics.Replies.WithLabelValues("ndp").Inc()
	}
}

type ip6Pair struct{ from, ip netip.Addr }

// parseUnicastNS takes apart an Ethernet frame holding a neighbor solicitation: the sender's MAC,
// the IPv6 source and destination, and the message.
func parseUnicastNS(f []byte) (net.HardwareAddr, ip6Pair, *ndp.NeighborSolicitation, bool) {
	if len(f) < ethLen+ip6Len || binary.BigEndian.Uint16(f[12:14]) != etherTypeIPv6 {
		return nil, ip6Pair{}, nil, false
	}
	ip6 := f[ethLen:]
	plen := int(binary.BigEndian.Uint16(ip6[4:6]))
	if ip6[0]>>4 != 6 || ip6[6] != 58 || ip6[7] != 255 || len(ip6) < ip6Len+plen {
		return nil, ip6Pair{}, nil, false
	}
	msg, err := ndp.ParseMessage(ip6[ip6Len : ip6Len+plen])
	if err != nil {
		return nil, ip6Pair{}, nil, false
	}
	ns, ok := msg.(*ndp.NeighborSolicitation)
	if !ok {
		return nil, ip6Pair{}, nil, false
	}
	from := netip.AddrFrom16([16]byte(ip6[8:24]))
	to := netip.AddrFrom16([16]byte(ip6[24:40]))
	return net.HardwareAddr(f[6:12]), ip6Pair{from: from, ip: to}, ns, true
}

// unicastNA builds the Ethernet frame of a solicited neighbor advertisement for vip, from vip to the
// asker.
func (l *link) unicastNA(vip, to netip.Addr, toMAC net.HardwareAddr) ([]byte, error) {
	body, err := ndp.MarshalMessageChecksum(l.advertisement(vip, true), vip, to)
	if err != nil {
		return nil, err
	}
	f := make([]byte, ethLen+ip6Len, ethLen+ip6Len+len(body))
	copy(f[0:6], toMAC)
	copy(f[6:12], l.ifi.HardwareAddr)
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv6)
	ip6 := f[ethLen:]
	ip6[0] = 6 << 4
	binary.BigEndian.PutUint16(ip6[4:6], uint16(len(body)))
	ip6[6], ip6[7] = 58, 255 // ICMPv6, the hop limit NDP requires
	src, dst := vip.As16(), to.As16()
	copy(ip6[8:24], src[:])
	copy(ip6[24:40], dst[:])
	return append(f, body...), nil
}
