package nodeport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/testutil"
)

// lab is a node network namespace with baregate's rules, a client on the node LAN and two backend pods
// on the node's pod bridge:
//
//	client 192.0.2.101 --- 192.0.2.11 node 198.18.1.1 (br) --- b1 198.18.1.10, b2 198.18.1.11
type lab struct {
	t                *testing.T
	node, client     string
	backends         []string
	nodeNS, clientNS netns.NsHandle
	backendNS        []netns.NsHandle
}

func newLab(t *testing.T) *lab {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "nft")
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", t.Name(), os.Getpid())
	id := fmt.Sprintf("%07x", h.Sum32()&0xfffffff)
	l := &lab{t: t, node: "np" + id + "n", client: "np" + id + "c", backends: []string{"np" + id + "b1", "np" + id + "b2"}}
	for _, ns := range append([]string{l.node, l.client}, l.backends...) {
		l.ip("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		l.ip("-n", ns, "link", "set", "lo", "up")
	}
	l.ip("-n", l.node, "link", "add", "eth-c", "type", "veth", "peer", "name", "eth0", "netns", l.client)
	l.ip("-n", l.node, "addr", "add", "192.0.2.11/24", "dev", "eth-c")
	l.ip("-n", l.node, "link", "set", "eth-c", "up")
	l.ip("-n", l.client, "addr", "add", "192.0.2.101/24", "dev", "eth0")
	l.ip("-n", l.client, "link", "set", "eth0", "up")
	l.ip("-n", l.client, "route", "add", "default", "via", "192.0.2.11")
	// Traffic to Service IPs without endpoints is not DNATed and must still be routable, as on a real
	// node with a default route, to reach the reject. The route leads back out of the interface the
	// client is on, and the ICMP redirect the kernel would send for that takes the per-host ICMP rate
	// token the reject's port-unreachable needs: no redirects.
	l.ip("-n", l.node, "route", "add", "default", "via", "192.0.2.101")
	for _, key := range []string{"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0", "net.ipv4.conf.eth-c.send_redirects=0"} {
		if out, err := exec.Command("ip", "netns", "exec", l.node, "sysctl", "-qw", key).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s: %v: %s", key, err, out)
		}
	}
	l.ip("-n", l.node, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.node, "addr", "add", "198.18.1.1/24", "dev", "br0")
	l.ip("-n", l.node, "link", "set", "br0", "up")
	for i, b := range l.backends {
		veth := fmt.Sprintf("veth-b%d", i+1)
		l.ip("-n", l.node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", b)
		l.ip("-n", l.node, "link", "set", veth, "master", "br0", "up")
		// With br_netfilter (bridge-nf-call-iptables), a pod's packet DNATed back to itself is bridged,
		// not routed, and leaves by the port it came in on: the port needs hairpin mode, as kubelet
		// sets for bridge CNIs.
		l.ip("-n", l.node, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
		l.ip("-n", b, "addr", "add", fmt.Sprintf("198.18.1.%d/24", 10+i), "dev", "eth0")
		l.ip("-n", b, "link", "set", "eth0", "up")
		l.ip("-n", b, "route", "add", "default", "via", "198.18.1.1")
	}
	var err error
	if l.nodeNS, err = netns.GetFromName(l.node); err != nil {
		t.Fatal(err)
	}
	if l.clientNS, err = netns.GetFromName(l.client); err != nil {
		t.Fatal(err)
	}
	for _, b := range l.backends {
		h, err := netns.GetFromName(b)
		if err != nil {
			t.Fatal(err)
		}
		l.backendNS = append(l.backendNS, h)
	}
	t.Cleanup(func() {
		l.nodeNS.Close()
		l.clientNS.Close()
		for _, h := range l.backendNS {
			h.Close()
		}
	})
	return l
}

func (l *lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs fn on an OS thread inside ns. Sockets it creates stay in ns; processes it starts (nft)
// inherit ns, because the child is forked from the locked thread.
func in(t testing.TB, ns netns.NsHandle, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			done <- err
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			done <- err // leave the thread locked: the runtime discards it
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// serve runs, in each backend, a TCP server on 8080 and a UDP server on 5353 that answer with the
// backend's name and the client address they saw.
func (l *lab) serve() {
	for i, ns := range l.backendNS {
		name := fmt.Sprintf("b%d", i+1)
		var tl, el net.Listener
		var ul net.PacketConn
		in(l.t, ns, func() {
			var err error
			if tl, err = net.Listen("tcp4", ":8080"); err == nil {
				ul, err = net.ListenPacket("udp4", ":5353")
			}
			if err == nil {
				el, err = net.Listen("tcp4", ":8081")
			}
			if err != nil {
				l.t.Errorf("listening in %s: %v", name, err)
			}
		})
		if l.t.Failed() {
			l.t.FailNow()
		}
		l.t.Cleanup(func() { tl.Close(); ul.Close(); el.Close() })
		// 8081 answers every line with the backend's name and keeps the connection open.
		go func() {
			for {
				c, err := el.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					sc := bufio.NewScanner(c)
					for sc.Scan() {
						fmt.Fprintf(c, "%s\n", name)
					}
				}()
			}
		}()
		answerEach(tl, ul, func(from net.Addr) string { return name + " " + from.String() })
	}
}

// answerEach answers every TCP connection on tl with a line, and every UDP datagram on ul with a
// datagram, saying answer(the client's address).
func answerEach(tl net.Listener, ul net.PacketConn, answer func(from net.Addr) string) {
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", answer(c.RemoteAddr()))
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 100)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			fmt.Fprint(writerTo{ul, from}, answer(from))
		}
	}()
}

type writerTo struct {
	c  net.PacketConn
	to net.Addr
}

func (w writerTo) Write(b []byte) (int, error) { return w.c.WriteTo(b, w.to) }

// connect opens a TCP connection from the client to addr and returns the answer ("b1 198.18.1.1:port").
func (l *lab) connect(addr string) (string, error) { return l.connectFrom(l.clientNS, addr) }

// connectFrom opens a TCP connection from namespace ns.
func (l *lab) connectFrom(ns netns.NsHandle, addr string) (string, error) {
	var c net.Conn
	var err error
	in(l.t, ns, func() {
		c, err = net.DialTimeout("tcp4", addr, 2*time.Second)
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func (l *lab) proxy() *Proxy {
	l.t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", l.node, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		l.t.Fatalf("enabling forwarding: %v: %s", err, out)
	}
	var p *Proxy
	var err error
	in(l.t, l.nodeNS, func() {
		p, err = New(Config{MasqueradeBit: 14, HealthzTimeout: time.Minute, MinSyncPeriod: 0}, cluster.Deps{})
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

// sync hands p the snapshot of w and programs it inside the node namespace.
func (l *lab) sync(ctx context.Context, p *Proxy, w *world) {
	l.t.Helper()
	p.Update(w.snapshot())
	var err error
	in(l.t, l.nodeNS, func() { err = p.sync(ctx) })
	if err != nil {
		l.t.Fatal(err)
	}
}

func kernelWorld() *world {
	timeout := int32(600)
	return &world{
		services: []*corev1.Service{
			svc("web", "198.19.0.10", nodePort(30080), loadBalancer("203.0.113.10"), func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"198.51.100.10"}
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "echo", Port: 81, Protocol: corev1.ProtocolTCP})
			}),
			svc("local", "198.19.0.11", nodePort(30081), etpLocal(0)),
			svc("sticky", "198.19.0.12", func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
			}),
			svc("empty", "198.19.0.13"),
			svc("elsewhere", "198.19.0.14", nodePort(30084), etpLocal(0)),
			svc("dns", "198.19.0.53", func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}
			}),
		},
		slices: []*discoveryv1.EndpointSlice{
			slice("web", "web", []discoveryv1.EndpointPort{port("http", corev1.ProtocolTCP, 8080), port("echo", corev1.ProtocolTCP, 8081)},
				ep("198.18.1.10", nodeA), ep("198.18.1.11", nodeA)),
			slice("local", "local", nil, ep("198.18.1.10", nodeA)),
			slice("sticky", "sticky", nil, ep("198.18.1.10", nodeA), ep("198.18.1.11", nodeA)),
			// The endpoint is reachable, but the slice says it lives on node-b.
			slice("elsewhere", "elsewhere", nil, ep("198.18.1.11", nodeB)),
			slice("dns", "dns", []discoveryv1.EndpointPort{port("dns", corev1.ProtocolUDP, 5353)}, ep("198.18.1.10", nodeA), ep("198.18.1.11", nodeA)),
		},
	}
}

// start builds a lab with its backends serving and kernelWorld programmed.
func start(t *testing.T) (*lab, *Proxy, *world) {
	l := newLab(t)
	l.serve()
	w := kernelWorld()
	p := l.proxy()
	l.sync(context.Background(), p, w)
	return l, p, w
}

func TestKernelForwarding(t *testing.T) {
	l, p, w := start(t)
	ctx := context.Background()

	for _, addr := range []string{"198.19.0.10:80", "192.0.2.11:30080", "198.51.100.10:80", "203.0.113.10:80"} {
		seen := map[string]bool{}
		for range 24 {
			got, err := l.connect(addr)
			if err != nil {
				t.Fatalf("connecting to %s: %v", addr, err)
			}
			backend, from, _ := strings.Cut(got, " ")
			seen[backend] = true
			// The client is off the pod network, so the backend must see the node (masquerade).
			if !strings.HasPrefix(from, "198.18.1.1:") {
				t.Errorf("%s: backend saw the client as %s; want the node's pod bridge address", addr, from)
			}
		}
		if !seen["b1"] || !seen["b2"] {
			t.Errorf("%s: 24 connections reached only %v; want both backends", addr, seen)
		}
	}

	got, err := l.connect("192.0.2.11:30081")
	if err != nil || got != "b1 192.0.2.101:"+strings.SplitN(got, ":", 2)[1] || !strings.HasPrefix(got, "b1 192.0.2.101:") {
		t.Errorf("externalTrafficPolicy Local: got %q, %v; want b1 seeing the client's own address", got, err)
	}

	// A pod reaching itself through its Service is masqueraded, or its reply would skip the DNAT.
	if got, err := l.connectFrom(l.backendNS[0], "198.19.0.11:80"); err != nil || !strings.HasPrefix(got, "b1 198.18.1.1:") {
		t.Errorf("hairpin: got %q, %v; want b1 seeing the node's bridge address", got, err)

	}

	first, err := l.connect("198.19.0.12:80")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		again, err := l.connect("198.19.0.12:80")
		if err != nil {
			t.Fatal(err)
		}
		if again[:2] != first[:2] {
			t.Fatalf("ClientIP affinity broken: first %q, then %q", first, again)
		}
	}

	if _, nodeErr := l.connectFrom(l.nodeNS, "198.19.0.13:80"); !errors.Is(nodeErr, syscall.ECONNREFUSED) {
		t.Errorf("Service without endpoints, from the node: got %v; want connection refused", nodeErr)
	}
	if _, err := l.connect("198.19.0.13:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Service without endpoints, from the client: got %v; want connection refused", err)
	}
	var nerr net.Error
	if _, err := l.connect("192.0.2.11:30084"); !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Errorf("externalTrafficPolicy Local without local endpoints: got %v; want a timeout (dropped)", err)
	}

	// Other tables are not ours: a foreign table survives syncs and Cleanup.
	nft := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"netns", "exec", l.node, "nft"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	nft("add", "table", "ip", "someone-else")
	w.services = w.services[:3]
	l.sync(ctx, p, w)
	if _, err := l.connect("192.0.2.11:30084"); err == nil || !strings.Contains(err.Error(), "refused") {
		// The Service is gone: the NodePort is an ordinary closed port now (RST, not a drop).
		t.Errorf("NodePort of a deleted Service: got %v; want refused by the node's own stack", err)
	}
	var cerr error
	in(t, l.nodeNS, func() { cerr = Cleanup(ctx) })
	if cerr != nil {
		t.Fatal(cerr)
	}
	if tables := nft("list", "tables"); strings.Contains(tables, TableName) || !strings.Contains(tables, "someone-else") {
		t.Errorf("after Cleanup the tables are:\n%s", tables)
	}
}

// TestKernelUDPConntrackCleanup checks that a UDP client whose endpoint goes away is moved on at
// once, instead of sending into the old conntrack entry until it times out.
func TestKernelUDPConntrackCleanup(t *testing.T) {
	l, p, w := start(t)
	ctx := context.Background()

	var c net.Conn
	var err error
	in(t, l.clientNS, func() { c, err = net.Dial("udp4", "198.19.0.53:53") })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func() string {
		t.Helper()
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no UDP answer: %v", err)
		}
		return string(buf[:min(n, 2)])
	}
	first := ask()
	if again := ask(); again != first {
		t.Fatalf("one UDP flow reached %s then %s", first, again)
	}
	// Remove the endpoint that answered; its server keeps running, so only a deleted conntrack entry
	// can move the flow to the other backend.
	keep := "198.18.1.11"
	if first == "b2" {
		keep = "198.18.1.10"
	}
	w.slices[4] = slice("dns", "dns", []discoveryv1.EndpointPort{port("dns", corev1.ProtocolUDP, 5353)}, ep(keep, nodeA))
	l.sync(ctx, p, w)
	if got := ask(); got == first {
		t.Errorf("the UDP flow still reaches %s after its endpoint was removed", got)
	}
}

// TestKernelRestartKeepsConnections checks that a new Proxy's first (full) sync over the rules a
// previous one left keeps established connections: the rules are rewritten, conntrack keeps the NAT.
func TestKernelRestartKeepsConnections(t *testing.T) {
	l, _, w := start(t)
	ctx := context.Background()
	var c net.Conn
	var err error
	in(t, l.clientNS, func() { c, err = net.DialTimeout("tcp4", "198.19.0.10:81", 2*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	ask := func() string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintln(c, "q"); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("established connection broke: %v", err)
		}
		return strings.TrimSpace(line)
	}
	before := ask()
	restarted := l.proxy()
	l.sync(ctx, restarted, w)
	if after := ask(); after != before {
		t.Errorf("connection moved from %s to %s across the restart", before, after)
	}
}

// serveAddresses gives each backend a second address (b1 198.18.1.12, b2 198.18.1.13) and runs, on
// every backend address, a TCP server on 9090 and a UDP server on 9053 that answer with the address
// they were reached at: four distinct endpoints on two backends.
func (l *lab) serveAddresses() []string {
	var addrs []string
	for i, ns := range l.backendNS {
		extra := fmt.Sprintf("198.18.1.%d", 12+i)
		l.ip("-n", l.backends[i], "addr", "add", extra+"/24", "dev", "eth0")
		for _, a := range []string{fmt.Sprintf("198.18.1.%d", 10+i), extra} {
			addrs = append(addrs, a)
			var tl net.Listener
			var ul net.PacketConn
			var err error
			in(l.t, ns, func() {
				if tl, err = net.Listen("tcp4", a+":9090"); err == nil {
					ul, err = net.ListenPacket("udp4", a+":9053")
				}
			})
			if err != nil {
				l.t.Fatalf("listening on %s: %v", a, err)
			}
			l.t.Cleanup(func() { tl.Close(); ul.Close() })
			answerEach(tl, ul, func(net.Addr) string { return a })
		}
	}
	return addrs
}

// askUDP sends one datagram from a new socket of the client to addr and returns the answer.
func (l *lab) askUDP(addr string) (string, error) {
	var c net.Conn
	var err error
	in(l.t, l.clientNS, func() { c, err = net.Dial("udp4", addr) })
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Write([]byte("q")); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestKernelFastPathSpread checks that real TCP and UDP connections to a fast-path Service (its
// ClusterIP and its NodePort) reach every one of its endpoints, and still do after partial syncs
// change their number 3 -> 2 -> 4 (slots removed, the frontends moved to other pick chains).
func TestKernelFastPathSpread(t *testing.T) {
	l := newLab(t)
	addrs := l.serveAddresses()
	ports := []discoveryv1.EndpointPort{port("web", corev1.ProtocolTCP, 9090), port("dns", corev1.ProtocolUDP, 9053)}
	w := &world{services: []*corev1.Service{svc("spread", "198.19.0.20", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "web", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30090},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053},
		}
	})}}
	endpoints := func(as ...string) *discoveryv1.EndpointSlice {
		var eps []discoveryv1.Endpoint
		for _, a := range as {
			eps = append(eps, ep(a, nodeA))
		}
		return slice("spread", "spread-1", ports, eps...)
	}
	ctx := context.Background()
	p := l.proxy()
	var firstFull time.Time
	for i, want := range [][]string{addrs[:3], addrs[1:3], addrs} {
		w.slices = []*discoveryv1.EndpointSlice{endpoints(want...)}
		l.sync(ctx, p, w)
		if i == 0 {
			firstFull = p.lastFull
		} else if p.lastFull != firstFull {
			t.Fatalf("step %d: the sync was a full one; want partial", i)
		}
		for _, fe := range []struct{ proto, addr string }{
			{"tcp", "198.19.0.20:80"}, {"tcp", "192.0.2.11:30090"}, {"udp", "198.19.0.20:53"}, {"udp", "192.0.2.11:30053"},
		} {
			seen := map[string]bool{}
			for range 40 * len(want) {
				var got string
				var err error
				if fe.proto == "tcp" {
					got, err = l.connect(fe.addr)
				} else {
					got, err = l.askUDP(fe.addr)
				}
				if err != nil {
					t.Fatalf("step %d: %s %s: %v", i, fe.proto, fe.addr, err)
				}
				seen[got] = true
			}
			for _, a := range want {
				if !seen[a] {
					t.Errorf("step %d: %s %s reached %v; want all of %v", i, fe.proto, fe.addr, slices.Sorted(maps.Keys(seen)), want)
					break
				}
			}
			if len(seen) != len(want) {
				t.Errorf("step %d: %s %s reached %v; want only %v", i, fe.proto, fe.addr, slices.Sorted(maps.Keys(seen)), want)
			}
		}
	}
}
