// Package nettest builds small L2 labs of network namespaces joined by bridges for lbip's tests
// and benchmarks: hosts, addresses, DNAT to a local listener, and code run inside a namespace.
package nettest

import (
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/testutil"
	"golang.org/x/sys/unix"
)

// Lab is an L2 segment (a bridge in its own namespace) joining hosts in their own namespaces.
type Lab struct {
	t      testing.TB
	prefix string
	undo   []func()
	// Bridge is the namespace holding the bridges.
	Bridge string
	hosts  int
}

// New creates the lab's bridge namespace with bridge br0; everything is removed at cleanup. It
// needs root and ip/nft, and skips (fails under CI) without them.
func New(t testing.TB) *Lab {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "nft")
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	// The clock tells apart the labs of one test (a benchmark builds one per trial).
	l := &Lab{t: t, prefix: fmt.Sprintf("bg%04x%d%x", h.Sum32()&0xffff, os.Getpid(), time.Now().UnixNano()&0xfffff)}
	t.Cleanup(l.Close)
	l.Bridge = l.NetNS("lan")
	l.IP(l.Bridge, "link", "add", "br0", "type", "bridge")
	l.IP(l.Bridge, "link", "set", "br0", "up")
	return l
}

// Close removes everything the lab made; it runs at the test's cleanup too.
func (l *Lab) Close() {
	for i := len(l.undo) - 1; i >= 0; i-- {
		l.undo[i]()
	}
	l.undo = nil
}

// Enter moves the calling goroutine, locked to its OS thread, into namespace ns for good: the
// thread is retired when the goroutine ends. For long-lived workers such as traffic generators.
func Enter(ns string) error {
	runtime.LockOSThread()
	f, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// NetNS creates a namespace removed at cleanup, with IPv6 duplicate address detection off so
// addresses are usable at once.
func (l *Lab) NetNS(name string) string {
	ns := l.prefix + name
	Run(l.t, "ip", "netns", "add", ns)
	l.undo = append(l.undo, func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, k := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
		Run(l.t, "ip", "netns", "exec", ns, "sysctl", "-qw", k+"=0")
	}
	return ns
}

// Host adds a namespace with interface ifname on bridge br (created on first use) and the given
// addresses, and returns the namespace and the interface's MAC.
func (l *Lab) Host(name, br, ifname string, addrs ...string) (string, net.HardwareAddr) {
	ns := l.NetNS(name)
	l.hosts++
	if br != "br0" {
		exec.Command("ip", "-n", l.Bridge, "link", "add", br, "type", "bridge").Run()
		l.IP(l.Bridge, "link", "set", br, "up")
	}
	port := fmt.Sprintf("p%d", l.hosts)
	Run(l.t, "ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns", l.Bridge)
	l.IP(l.Bridge, "link", "set", port, "master", br, "up")
	l.IP(ns, "link", "set", "lo", "up")
	l.IP(ns, "link", "set", ifname, "up")
	for _, a := range addrs {
		l.IP(ns, "addr", "add", a, "dev", ifname, "nodad")
	}
	var mac net.HardwareAddr
	InNS(l.t, ns, func() {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			l.t.Fatal(err)
		}
		mac = ifi.HardwareAddr
	})
	return ns, mac
}

// IP runs ip -n ns args.
func (l *Lab) IP(ns string, args ...string) string {
	return Run(l.t, "ip", append([]string{"-n", ns}, args...)...)
}

// Run runs a command and fails the test on error, returning its output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNS runs fn on an OS thread switched into namespace ns. Sockets fn opens stay in ns.
func InNS(t testing.TB, ns string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	var setupErr error
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			setupErr = err
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			setupErr = err
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			setupErr = err
			runtime.UnlockOSThread()
			return
		}
		fn()
		// A thread that cannot go back stays locked, and the runtime retires it.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
	if setupErr != nil {
		t.Fatalf("entering namespace %s: %v", ns, setupErr)
	}
}

// DNAT makes ns send TCP to vip:80 on to local:8080, the way baregate's forwarding does it: the LB
// IP is on no interface, a PREROUTING DNAT rule takes its traffic (nodeport's rules do the same
// towards endpoints).
func (l *Lab) DNAT(ns, vip4, local4, vip6, local6 string) {
	rules := fmt.Sprintf(`table inet lbtest {
	chain pre {
		type nat hook prerouting priority dstnat;
		ip daddr %s tcp dport 80 dnat ip to %s:8080
		ip6 daddr %s tcp dport 80 dnat ip6 to [%s]:8080
	}
}`, vip4, local4, vip6, local6)
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft in %s: %v\n%s", ns, err, out)
	}
}

// ServeName adds DNAT rules to ns and a listener on :8080 there answering every connection with name.
func (l *Lab) ServeName(ns, name, vip4, local4, vip6, local6 string) {
	l.DNAT(ns, vip4, local4, vip6, local6)
	var ln net.Listener
	InNS(l.t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp", ":8080"); err != nil {
			l.t.Fatal(err)
		}
	})
	l.undo = append(l.undo, func() { ln.Close() })
	go ServeName(ln, name)
}

// ServeName answers every connection on ln with name until ln is closed.
func ServeName(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, name)
		c.Close()
	}
}

// Fetch connects from ns to addr and returns what the server said.
func Fetch(t testing.TB, ns, addr string, timeout time.Duration) (string, error) {
	var out []byte
	var err error
	InNS(t, ns, func() {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, timeout); err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		out, err = io.ReadAll(c)
	})
	return string(out), err
}

// NeighMAC returns the MAC the kernel neighbour table of ns holds for ip, or "".
func (l *Lab) NeighMAC(ns, ip string) string {
	f := strings.Fields(l.IP(ns, "neigh", "show", ip))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1]
		}
	}
	return ""
}

// Eventually polls cond until it returns "" and fails the test with its last message after bound.
func Eventually(t testing.TB, bound time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", bound, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
