package lbip

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/testutil"
	"github.com/baregate/baregate/lbip/internal/nettest"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

// The failover tests run each gateway as its own process (this test binary re-executed in the
// node's namespace), so that killing one is a real crash: sockets vanish, gossip goes silent.
const (
	nodeEnv  = "BAREGATE_LBIP_TEST_NODE"
	nodesEnv = "BAREGATE_LBIP_TEST_NODES"
	vip4     = "203.0.113.7"
	vip6     = "2001:db8:0:2::7"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(nodeEnv); name != "" {
		os.Exit(runNode(name, os.Getenv(nodesEnv)))
	}
	os.Exit(m.Run())
}

// runNode is one gateway: the LB component with a fixed snapshot (three nodes, one dual-stack
// LoadBalancer Service) and a listener answering its node name behind the DNAT the lab set up.
func runNode(self, nodeList string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	in := cluster.Inputs{
		NodeName:         self,
		Pools:            []*metallbv1beta1.IPAddressPool{pool("lb", "203.0.113.0/24", "2001:db8:0:2::/64")},
		L2Advertisements: []*metallbv1beta1.L2Advertisement{l2adv("all", metallbv1beta1.L2AdvertisementSpec{})},
		Services:         []*corev1.Service{lbService("web", false, vip4, vip6)},
	}
	for _, entry := range strings.Split(nodeList, ",") {
		name, addr, _ := strings.Cut(entry, "=")
		n := node(name)
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
		in.Nodes = append(in.Nodes, n)
	}
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go nettest.ServeName(ln, self)
	cfg := DefaultConfig()
	// A FakeRecorder without a channel drops Events instead of blocking on a full one.
	deps := cluster.Deps{NodeName: self, Namespace: "baregate", Client: fake.NewClientset(in.Services[0]), Recorder: &record.FakeRecorder{}}
	lb, err := New(cfg, deps, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lb.Update(cluster.NewSnapshot(1, time.Now(), in))
	go reportLive(ctx, lb)
	if err := lb.Run(klog.NewContext(ctx, klog.Background())); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// reportLive prints the gossip's live set whenever it changes, for the harness to wait on.
func reportLive(ctx context.Context, lb *LB) {
	last := ""
	for ctx.Err() == nil {
		live := slices.Sorted(maps.Keys(lb.LiveNodes()))
		if s := strings.Join(live, ","); s != last && lb.Ready() == nil {
			fmt.Printf("LIVE %s\n", s)
			last = s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gatewayLab is a LAN with a client and three gateway processes.
type gatewayLab struct {
	lab    *nettest.Lab
	client string
	nodes  map[string]string // name -> namespace
	procs  map[string]*exec.Cmd
	logs   map[string]*testutil.SyncBuffer
	// failedAt is when the last measured failure was applied.
	failedAt time.Time
}

func startGateways(tb testing.TB) *gatewayLab {
	l := nettest.New(tb)
	g := &gatewayLab{lab: l, nodes: map[string]string{}, procs: map[string]*exec.Cmd{}, logs: map[string]*testutil.SyncBuffer{}}
	g.client, _ = l.Host("c", "br0", "eth0", "192.0.2.101/24", "2001:db8:0:1::101/64")
	l.IP(g.client, "route", "add", "203.0.113.0/24", "dev", "eth0")
	l.IP(g.client, "-6", "route", "add", "2001:db8:0:2::/64", "dev", "eth0")
	var list []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		ip4, ip6 := fmt.Sprintf("192.0.2.1%d", i), fmt.Sprintf("2001:db8:0:1::1%d", i)
		g.nodes[name], _ = l.Host(name, "br0", "eth0", ip4+"/24", ip6+"/64")
		l.DNAT(g.nodes[name], vip4, ip4, vip6, ip6)
		list = append(list, name+"="+ip4)
	}
	// Runs before the lab's own cleanup, which removes the namespaces.
	tb.Cleanup(func() { g.close(tb) })
	for name, ns := range g.nodes {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), nodeEnv+"="+name, nodesEnv+"="+strings.Join(list, ","))
		g.logs[name] = &testutil.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = g.logs[name], g.logs[name]
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		g.procs[name] = cmd
	}
	for name := range g.procs {
		nettest.Eventually(tb, 20*time.Second, func() string {
			log := g.logs[name].String()
			if i := strings.LastIndex(log, "LIVE "); i >= 0 && strings.HasPrefix(log[i:], "LIVE n1,n2,n3\n") {
				return ""
			}
			return "gateway " + name + " has not seen all three gateways live:\n" + log
		})
	}
	return g
}

// close kills the gateways and removes the lab.
func (g *gatewayLab) close(tb testing.TB) {
	for name, cmd := range g.procs {
		cmd.Process.Kill()
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("gateway %s log:\n%s", name, g.logs[name])
		}
	}
	g.procs = map[string]*exec.Cmd{}
	g.lab.Close()
}

// owner waits until the client reaches addr and returns the node that answered.
func (g *gatewayLab) owner(tb testing.TB, addr string) string {
	var owner string
	nettest.Eventually(tb, 20*time.Second, func() string {
		got, err := nettest.Fetch(tb, g.client, addr, 300*time.Millisecond)
		if err != nil || g.nodes[got] == "" {
			return fmt.Sprintf("client cannot reach %s: %q, %v", addr, got, err)
		}
		owner = got
		return ""
	})
	return owner
}

type attempt struct {
	start, end time.Time
	body       string
	err        error
}

// measureGap sends a new connection to addr every 10 ms from the client, applies the failure, and
// returns the time from the failure until a connection answered by another node completes.
func (g *gatewayLab) measureGap(tb testing.TB, addr, oldOwner string, fail func()) time.Duration {
	ticks := make(chan time.Time)
	results := make(chan attempt, 1024)
	done := make(chan struct{})
	defer close(done)
	for range 40 {
		go func() {
			// The goroutine's thread stays in the client namespace and is retired with it.
			if err := nettest.Enter(g.client); err != nil {
				results <- attempt{err: err}
				return
			}
			for start := range ticks {
				a := attempt{start: start}
				c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
				if err == nil {
					c.SetDeadline(time.Now().Add(300 * time.Millisecond))
					var b []byte
					b, err = io.ReadAll(c)
					a.body = string(b)
					c.Close()
				}
				a.end, a.err = time.Now(), err
				select {
				case results <- a:
				case <-done:
					return
				}
			}
		}()
	}
	go func() {
		defer close(ticks)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				select {
				case ticks <- now:
				default: // every worker busy: a request slot lost, as a client would
				}
			}
		}
	}()

	var failedAt time.Time
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-deadline:
			tb.Fatalf("traffic to %s did not resume within 30 s of the failure", addr)
		case a := <-results:
			switch {
			case failedAt.IsZero() && a.err == nil && a.body == oldOwner:
				fail()
				failedAt = time.Now()
				g.failedAt = failedAt
			case !failedAt.IsZero() && a.err == nil && a.body != oldOwner && a.start.After(failedAt):
				return a.end.Sub(failedAt)
			}
		}
	}
}

func (g *gatewayLab) kill(name string) func() {
	return func() { g.procs[name].Process.Kill() }
}

func (g *gatewayLab) linkDown(name string) func() {
	return func() { g.lab.IP(g.nodes[name], "link", "set", "eth0", "down") }
}

// TestFailover kills the owner's gateway, then cuts the next owner off the LAN, and checks that
// each time the client's traffic (IPv4 and IPv6) resumes through a surviving node.
func TestFailover(t *testing.T) {
	g := startGateways(t)
	first := g.owner(t, vip4+":80")
	if o6 := g.owner(t, "["+vip6+"]:80"); g.nodes[o6] == "" {
		t.Fatalf("IPv6 VIP not served: %q", o6)
	}
	gap := g.measureGap(t, vip4+":80", first, g.kill(first))
	t.Logf("owner %s killed: traffic resumed after %v", first, gap)
	second := g.owner(t, vip4+":80")
	if second == first {
		t.Fatalf("still served by the killed node %s", first)
	}
	if mac := g.lab.NeighMAC(g.client, vip4); mac == "" {
		t.Errorf("client has no neighbour entry for %s", vip4)
	}
	v6 := g.owner(t, "["+vip6+"]:80")
	if v6 == first {
		t.Errorf("IPv6 VIP still served by the killed node")
	}

	gap = g.measureGap(t, vip4+":80", second, g.linkDown(second))
	t.Logf("owner %s cut off: traffic resumed after %v", second, gap)
	third := g.owner(t, vip4+":80")
	if slices.Contains([]string{first, second}, third) {
		t.Fatalf("served by %s after both %s and %s failed", third, first, second)
	}
}

// BenchmarkFailover measures, per trial in a fresh lab of three gateways, the time from a failure of
// the owning node until a client sending a new connection every 10 ms is served again, and reports
// the median and worst trial. Run: go test -run '^$' -bench Failover -benchtime 20x ./lbip/
func BenchmarkFailover(b *testing.B) {
	for _, mode := range []string{"kill", "linkdown"} {
		b.Run(mode, func(b *testing.B) {
			var gaps []time.Duration
			for range b.N {
				g := startGateways(b)
				owner := g.owner(b, vip4+":80")
				fail := g.kill(owner)
				if mode == "linkdown" {
					fail = g.linkDown(owner)
				}
				gap := g.measureGap(b, vip4+":80", owner, fail)
				gaps = append(gaps, gap)
				if gap > time.Second {
					// Benchmark output is truncated; the whole story goes to a file.
					var sb strings.Builder
					fmt.Fprintf(&sb, "slow trial (%v) after %s failed at %s; client: %s", gap, owner, g.failedAt.Format("15:04:05.000000"), g.lab.IP(g.client, "neigh", "show", vip4))
					for name := range g.procs {
						fmt.Fprintf(&sb, "gateway %s log:\n%s\n", name, g.logs[name])
					}
					f, err := os.CreateTemp("", "lbip-slow-failover-*.log")
					if err == nil {
						f.WriteString(sb.String())
						f.Close()
						b.Logf("slow trial (%v); logs in %s", gap, f.Name())
					}
				}
				g.close(b)
			}
			slices.Sort(gaps)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(gaps[len(gaps)/2].Milliseconds()), "p50-ms")
			b.ReportMetric(float64(gaps[(len(gaps)*99-1)/100].Milliseconds()), "p99-ms")
			b.ReportMetric(float64(gaps[len(gaps)-1].Milliseconds()), "max-ms")
		})
	}
}
