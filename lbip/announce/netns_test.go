package announce

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

// lab is an L2 segment (a bridge in its own namespace) joining hosts in their own namespaces.
type lab struct {
	t      *testing.T
	prefix string
	bridge string // namespace holding the bridges
	hosts  int
}

func newLab(t *testing.T) *lab {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "nft")
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	l := &lab{t: t, prefix: fmt.Sprintf("bgan%04x%d", h.Sum32()&0xffff, os.Getpid())}
	l.bridge = l.netns("lan")
	l.ip(l.bridge, "link", "add", "br0", "type", "bridge")
	l.ip(l.bridge, "link", "set", "br0", "up")
	return l
}

// netns creates a namespace removed at cleanup, with IPv6 duplicate address detection off so
// addresses are usable at once.
func (l *lab) netns(name string) string {
	ns := l.prefix + name
	run(l.t, "ip", "netns", "add", ns)
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, k := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
		run(l.t, "ip", "netns", "exec", ns, "sysctl", "-qw", k+"=0")
	}
	return ns
}

// host adds a namespace with interface ifname on bridge br (created on first use) and the given
// addresses, and returns the namespace and the interface's MAC.
func (l *lab) host(name, br, ifname string, addrs ...string) (string, net.HardwareAddr) {
	ns := l.netns(name)
	l.hosts++
	if br != "br0" {
		exec.Command("ip", "-n", l.bridge, "link", "add", br, "type", "bridge").Run()
		l.ip(l.bridge, "link", "set", br, "up")
	}
	port := fmt.Sprintf("p%d", l.hosts)
	run(l.t, "ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns", l.bridge)
	l.ip(l.bridge, "link", "set", port, "master", br, "up")
	l.ip(ns, "link", "set", "lo", "up")
	l.ip(ns, "link", "set", ifname, "up")
	for _, a := range addrs {
		l.ip(ns, "addr", "add", a, "dev", ifname, "nodad")
	}
	var mac net.HardwareAddr
	inNS(l.t, ns, func() {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			l.t.Fatal(err)
		}
		mac = ifi.HardwareAddr
	})
	return ns, mac
}

func (l *lab) ip(ns string, args ...string) string {
	return run(l.t, "ip", append([]string{"-n", ns}, args...)...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs fn on an OS thread switched into namespace ns. Sockets fn opens stay in ns.
func inNS(t *testing.T, ns string, fn func()) {
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

// serveName makes ns answer TCP connections to vip:80 with name, the way baregate's forwarding
// does it: the LB IP is on no interface, a PREROUTING DNAT rule sends its traffic to a local
// listener (nodeport's rules do the same towards endpoints).
func (l *lab) serveName(ns, name, vip4, local4, vip6, local6 string) {
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
	var ln net.Listener
	inNS(l.t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp", ":8080"); err != nil {
			l.t.Fatal(err)
		}
	})
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, name)
			c.Close()
		}
	}()
}

// fetch connects from ns to addr and returns what the server said.
func fetch(t *testing.T, ns, addr string, timeout time.Duration) (string, error) {
	var out []byte
	var err error
	inNS(t, ns, func() {
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

// neighMAC returns the MAC the kernel neighbour table of ns holds for ip, or "".
func (l *lab) neighMAC(ns, ip string) string {
	f := strings.Fields(l.ip(ns, "neigh", "show", ip))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1]
		}
	}
	return ""
}

func eventually(t *testing.T, bound time.Duration, cond func() string) {
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
