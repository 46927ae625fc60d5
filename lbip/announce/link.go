package announce

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv6"
	"k8s.io/klog/v2"
)

const etherTypeARP = 0x0806

// link answers ARP and NDP for the IPs it is given on one interface. Its sockets are opened on the
// goroutine that calls open*, so a caller in another network namespace (a test) gets them there.
type link struct {
	name    string
	ifi     *net.Interface
	logger  klog.Logger
	metrics *Metrics

	answering atomic.Pointer[map[netip.Addr]bool]
	closed    chan struct{}
	wg        sync.WaitGroup

	mu     sync.Mutex
	arp    *packet.Conn
	ndp    *ndp.Conn
	ns6    *packet.Conn       // unicast neighbor solicitations
	groups map[netip.Addr]int // solicited-node groups joined -> IPs needing each
	probes map[netip.Addr]chan net.HardwareAddr
}

func newLink(ifi *net.Interface, logger klog.Logger, m *Metrics) *link {
	l := &link{
		name: ifi.Name, ifi: ifi, logger: logger.WithValues("interface", ifi.Name), metrics: m,
		closed: make(chan struct{}), groups: map[netip.Addr]int{}, probes: map[netip.Addr]chan net.HardwareAddr{},
	}
	l.answering.Store(&map[netip.Addr]bool{})
	return l
}

func (l *link) answers(ip netip.Addr) bool { return (*l.answering.Load())[ip] }

// ensure opens the socket ip's family needs.
func (l *link) ensure(ip netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ip.Is4() && l.arp == nil {
		c, err := packet.Listen(l.ifi, packet.Raw, etherTypeARP, nil)
		if err != nil {
			return fmt.Errorf("opening ARP socket on %s: %w", l.name, err)
		}
		l.arp = c
		l.wg.Add(1)
		go l.readARP(c)
	}
	if ip.Is6() && l.ndp == nil {
		c, _, err := ndp.Listen(l.ifi, ndp.LinkLocal)
		if err != nil {
			return fmt.Errorf("opening NDP socket on %s (it needs a usable link-local address): %w", l.name, err)
		}
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeNeighborSolicitation)
		f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
		if err := c.SetICMPFilter(&f); err != nil {
			c.Close()
			return fmt.Errorf("filtering NDP socket on %s: %w", l.name, err)
		}
		u, err := l.openUnicastNS()
		if err != nil {
			c.Close()
			return err
		}
		l.ndp, l.ns6 = c, u
		l.wg.Add(2)
		go l.readNDP(c)
		go l.readUnicastNS(u)
	}
	return nil
}

// setAnswering replaces the IPs answered for, joining and leaving solicited-node groups as needed.
// Removals take effect before it returns.
func (l *link) setAnswering(ips map[netip.Addr]bool) error {
	old := *l.answering.Load()
	l.answering.Store(&ips)
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for ip := range old {
		if ips[ip] || !ip.Is6() || l.ndp == nil {
			continue
		}
		g, _ := ndp.SolicitedNodeMulticast(ip)
		if l.groups[g]--; l.groups[g] <= 0 {
			delete(l.groups, g)
			if err := l.ndp.LeaveGroup(g); err != nil {
				errs = append(errs, fmt.Errorf("leaving %s on %s: %w", g, l.name, err))
			}
		}
	}
	for ip := range ips {
		if old[ip] || !ip.Is6() {
			continue
		}
		if l.ndp == nil {
			errs = append(errs, fmt.Errorf("no NDP socket on %s for %s", l.name, ip))
			continue
		}
		g, _ := ndp.SolicitedNodeMulticast(ip)
		if l.groups[g] == 0 {
			if err := l.ndp.JoinGroup(g); err != nil {
				errs = append(errs, fmt.Errorf("joining %s on %s: %w", g, l.name, err))
				continue
			}
		}
		l.groups[g]++
	}
	return errors.Join(errs...)
}

func (l *link) close() {
	select {
	case <-l.closed:
		return
	default:
	}
	l.answering.Store(&map[netip.Addr]bool{})
	close(l.closed)
	l.mu.Lock()
	if l.arp != nil {
		l.arp.Close()
	}
	if l.ndp != nil {
		l.ndp.Close()
		l.ns6.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// watch registers a probe for ip: every MAC seen claiming it is sent on the returned channel until
// the returned stop is called.
func (l *link) watch(ip netip.Addr) (<-chan net.HardwareAddr, func()) {
	ch := make(chan net.HardwareAddr, 16)
	l.mu.Lock()
	l.probes[ip] = ch
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		delete(l.probes, ip)
		l.mu.Unlock()
	}
}

func (l *link) claimedBy(ip netip.Addr, mac net.HardwareAddr) {
	if bytes.Equal(mac, l.ifi.HardwareAddr) {
		return
	}
	l.mu.Lock()
	ch := l.probes[ip]
	l.mu.Unlock()
	if ch != nil {
		select {
		case ch <- mac:
		default:
		}
	}
}

func (l *link) readARP(c *packet.Conn) {
	defer l.wg.Done()
	buf := make([]byte, 1600)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			l.readFailed("ARP", err)
			return
		}
		var f ethernet.Frame
		if f.UnmarshalBinary(buf[:n]) != nil || f.EtherType != ethernet.EtherTypeARP || bytes.Equal(f.Source, l.ifi.HardwareAddr) {
			continue
		}
		var p arp.Packet
		if p.UnmarshalBinary(f.Payload) != nil {
			continue
		}
		l.claimedBy(p.SenderIP, p.SenderHardwareAddr)
		if p.Operation != arp.OperationRequest || !l.answers(p.TargetIP) || p.SenderIP == p.TargetIP {
			continue
		}
		l.metrics.Requests.WithLabelValues("arp").Inc()
		reply, err := arp.NewPacket(arp.OperationReply, l.ifi.HardwareAddr, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
		if err == nil {
			err = l.writeARP(reply, f.Source)
		}
		if err != nil {
			l.logger.Error(err, "Sending ARP reply", "ip", p.TargetIP, "to", p.SenderHardwareAddr)
			continue
		}
		l.metrics.Replies.WithLabelValues("arp").Inc()
	}
}

func (l *link) writeARP(p *arp.Packet, dst net.HardwareAddr) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	fb, err := (&ethernet.Frame{Destination: dst, Source: l.ifi.HardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		return err
	}
	l.mu.Lock()
	c := l.arp
	l.mu.Unlock()
	if c == nil {
		return fmt.Errorf("no ARP socket on %s", l.name)
	}
	_, err = c.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}

func (l *link) readNDP(c *ndp.Conn) {
	defer l.wg.Done()
	for {
		msg, _, src, err := c.ReadFrom()
		if err != nil {
			l.readFailed("NDP", err)
			return
		}
		switch m := msg.(type) {
		case *ndp.NeighborAdvertisement:
			if mac := linkLayerAddr(m.Options, ndp.Target); mac != nil {
				l.claimedBy(m.TargetAddress, mac)
			}
		case *ndp.NeighborSolicitation:
			if !l.answers(m.TargetAddress) {
				continue
			}
			l.metrics.Requests.WithLabelValues("ndp").Inc()
			na := l.advertisement(m.TargetAddress, true)
			dst := src
			if src.IsUnspecified() {
				// Duplicate address detection: the asker has no address yet, so answer all nodes.
				dst, na.Solicited = netip.IPv6LinkLocalAllNodes(), false
			}
			if err := c.WriteTo(na, nil, dst); err != nil {
				l.logger.Error(err, "Sending neighbor advertisement", "ip", m.TargetAddress, "to", src)
				continue
			}
			l.metrics.Replies.WithLabelValues("ndp").Inc()
		}
	}
}

func (l *link) advertisement(ip netip.Addr, solicited bool) *ndp.NeighborAdvertisement {
	return &ndp.NeighborAdvertisement{
		Solicited: solicited, Override: true, TargetAddress: ip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: l.ifi.HardwareAddr}},
	}
}

func linkLayerAddr(opts []ndp.Option, dir ndp.Direction) net.HardwareAddr {
	for _, o := range opts {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == dir {
			return lla.Addr
		}
	}
	return nil
}

func (l *link) readFailed(proto string, err error) {
	select {
	case <-l.closed:
	default:
		l.logger.Error(err, "Reading from socket failed; the next sync reopens it", "protocol", proto)
	}
}

// probe asks who has ip: an ARP probe (sender 0.0.0.0, RFC 5227) or a neighbor solicitation.
func (l *link) probe(ip netip.Addr) error {
	if ip.Is4() {
		p, err := arp.NewPacket(arp.OperationRequest, l.ifi.HardwareAddr, netip.IPv4Unspecified(), ethernet.Broadcast, ip)
		if err != nil {
			return err
		}
		p.TargetHardwareAddr = make(net.HardwareAddr, 6)
		return l.writeARP(p, ethernet.Broadcast)
	}
	g, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return err
	}
	l.mu.Lock()
	c := l.ndp
	l.mu.Unlock()
	if c == nil {
		return fmt.Errorf("no NDP socket on %s", l.name)
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: ip, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: l.ifi.HardwareAddr}}}
	return c.WriteTo(ns, nil, g)
}

// gratuitous announces ip: an ARP request with sender and target ip (RFC 5227 announcement) to
// broadcast, or an unsolicited neighbor advertisement with override to all nodes.
func (l *link) gratuitous(ip netip.Addr) error {
	if ip.Is4() {
		p, err := arp.NewPacket(arp.OperationRequest, l.ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
		if err != nil {
			return err
		}
		p.TargetHardwareAddr = make(net.HardwareAddr, 6)
		if err := l.writeARP(p, ethernet.Broadcast); err != nil {
			return err
		}
		l.metrics.Gratuitous.WithLabelValues("arp").Inc()
		return nil
	}
	l.mu.Lock()
	c := l.ndp
	l.mu.Unlock()
	if c == nil {
		return fmt.Errorf("no NDP socket on %s", l.name)
	}
	if err := c.WriteTo(l.advertisement(ip, false), nil, netip.IPv6LinkLocalAllNodes()); err != nil {
		return err
	}
	l.metrics.Gratuitous.WithLabelValues("ndp").Inc()
	return nil
}

// burst sends gratuitous announcements of ip at each offset, while ip is still answered here. The
// spread matters: a lone one is easily lost or, on some stacks, ignored within locktime of the
// entry's last change (see DefaultGratuitous).
func (l *link) burst(ip netip.Addr, offsets []time.Duration) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		start := time.Now()
		for _, off := range offsets {
			select {
			case <-l.closed:
				return
			case <-time.After(time.Until(start.Add(off))):
			}
			if !l.answers(ip) {
				return
			}
			if err := l.gratuitous(ip); err != nil {
				l.logger.Error(err, "Sending gratuitous announcement", "ip", ip)
			}
		}
	}()
}
