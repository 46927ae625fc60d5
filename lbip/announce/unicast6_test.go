package announce

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/bpf"
	"k8s.io/klog/v2/ktesting"
)

// nsFrame builds the frame a client sends to check its entry for target by unicast.
func nsFrame(t testing.TB, srcMAC, dstMAC net.HardwareAddr, src, target netip.Addr) []byte {
	body, err := ndp.MarshalMessageChecksum(&ndp.NeighborSolicitation{TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: srcMAC}}}, src, target)
	if err != nil {
		t.Fatal(err)
	}
	f := make([]byte, ethLen+ip6Len)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv6)
	f[ethLen] = 6 << 4
	binary.BigEndian.PutUint16(f[ethLen+4:], uint16(len(body)))
	f[ethLen+6], f[ethLen+7] = 58, 255
	s, d := src.As16(), target.As16()
	copy(f[ethLen+8:], s[:])
	copy(f[ethLen+24:], d[:])
	return append(f, body...)
}

func TestUnicastNSRoundTrip(t *testing.T) {
	client, owner := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	from, vip := netip.MustParseAddr("2001:db8:0:1::101"), netip.MustParseAddr(vip6)
	frame := nsFrame(t, client, owner, from, vip)

	vm, err := bpf.NewVM(mustFilter(t))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := vm.Run(frame); n == 0 {
		t.Errorf("the socket filter drops a unicast solicitation")
	}
	mcast, _ := ndp.SolicitedNodeMulticast(vip)
	if n, _ := vm.Run(nsFrame(t, client, owner, from, vip)[:ethLen+24]); n != 0 {
		t.Errorf("the socket filter passes a truncated frame")
	}
	multi := nsFrame(t, client, owner, from, vip)
	m16 := mcast.As16()
	copy(multi[ethLen+24:], m16[:])
	if n, _ := vm.Run(multi); n != 0 {
		t.Errorf("the socket filter passes a multicast solicitation, which the NDP socket answers")
	}

	mac, ips, ns, ok := parseUnicastNS(frame)
	if !ok || !bytes.Equal(mac, client) || ips.from != from || ips.ip != vip || ns.TargetAddress != vip {
		t.Fatalf("parseUnicastNS = %v %v %v %v", mac, ips, ns, ok)
	}
	logger, _ := ktesting.NewTestContext(t)
	l := newLink(&net.Interface{Name: "eth0", HardwareAddr: owner}, logger, NewMetrics(nil))
	na, err := l.unicastNA(vip, from, client)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(na[0:6], client) || !bytes.Equal(na[6:12], owner) || na[ethLen+7] != 255 {
		t.Errorf("advertisement frame header wrong: % x", na[:ethLen+8])
	}
	msg, err := ndp.ParseMessage(na[ethLen+ip6Len:])
	adv, isNA := msg.(*ndp.NeighborAdvertisement)
	if err != nil || !isNA || adv.TargetAddress != vip || !adv.Solicited || !adv.Override || !bytes.Equal(linkLayerAddr(adv.Options, ndp.Target), owner) {
		t.Errorf("advertisement = %+v, %v", msg, err)
	}
}

func mustFilter(t testing.TB) []bpf.Instruction {
	raw, err := unicastNSFilter()
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	return prog
}

func FuzzParseUnicastNS(f *testing.F) {
	f.Add(nsFrame(f, net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2},
		netip.MustParseAddr("2001:db8:0:1::101"), netip.MustParseAddr(vip6)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, ns, ok := parseUnicastNS(b); ok && !ns.TargetAddress.Is6() {
			t.Fatalf("parsed a solicitation for a non-IPv6 target %v", ns.TargetAddress)
		}
	})
}
