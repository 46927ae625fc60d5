package nodeport

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/baregate/baregate/internal/cluster"
	k8slab "github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/testutil"
)

// BenchmarkVsKubeProxy programs the same Services (n x 10 endpoints, from a real API server) with
// kube-proxy in nftables mode and with baregate, each in its own fresh network namespace, and reports
// both sync durations (kube-proxy's own sync metrics; baregate's sync from snapshot to applied) for a
// cold start and for one EndpointSlice change with all n present, the TCP connect time from the node
// through the rules to the first and the last Service's endpoints (median of connectTries), and
// memory: kube-proxy's RSS, and baregate's live Go heap after the sync (the test process holds no
// more than the gateway would: the listed objects, the snapshot and the Proxy). Sizes:
// $BAREGATE_BENCH_SIZES (default 1000,10000,30000).
func BenchmarkVsKubeProxy(b *testing.B) {
	testutil.RequireRoot(b)
	testutil.RequireTool(b, "etcd", "nft", "ip")
	sizes := benchSizes(b, 1000, 10000, 30000)
	ctx := context.Background()
	cpNS := fmt.Sprintf("npkp%d", os.Getpid())
	mustRun(b, "ip", "netns", "add", cpNS)
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", cpNS).Run() })
	mustRun(b, "ip", "-n", cpNS, "link", "set", "lo", "up")
	serveEndpoints(b, cpNS)
	progress("starting the control plane")
	cp, err := k8slab.StartControlPlane(ctx, k8slab.ControlPlaneOptions{Dir: b.TempDir(), Netns: cpNS})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cp.Stop() })
	client, err := cp.Client()
	if err != nil {
		b.Fatal(err)
	}
	bin, err := k8slab.K8sBinDir(ctx)
	if err != nil {
		b.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeA}, Spec: corev1.NodeSpec{PodCIDRs: []string{"198.18.1.0/24"}}}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	have := 0
	for _, n := range sizes {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			start := time.Now()
			createScale(b, client, have, n)
			have = n
			progress("created %d Services and EndpointSlices in %s", n, time.Since(start))
			for b.Loop() {
				kp := runKubeProxy(b, cp, cpNS, bin, client, n)
				bg := runBaregate(b, client, n)
				b.ReportMetric(kp.full.Seconds()*1000, "kube-proxy-full-ms")
				b.ReportMetric(bg.full.Seconds()*1000, "baregate-full-ms")
				b.ReportMetric(kp.change.Seconds()*1000, "kube-proxy-change-ms")
				b.ReportMetric(bg.change.Seconds()*1000, "baregate-change-ms")
				b.ReportMetric(float64(kp.connectFirst.Microseconds()), "kube-proxy-connect-first-us")
				b.ReportMetric(float64(kp.connectLast.Microseconds()), "kube-proxy-connect-last-us")
				b.ReportMetric(float64(bg.connectFirst.Microseconds()), "baregate-connect-first-us")
				b.ReportMetric(float64(bg.connectLast.Microseconds()), "baregate-connect-last-us")
				b.ReportMetric(float64(kp.rssKB)/1024, "kube-proxy-rss-MB")
				b.ReportMetric(float64(bg.rssKB)/1024, "baregate-heap-MB")
				b.Logf("n=%d full: kube-proxy %s baregate %s (%.1fx); one change: kube-proxy %s baregate %s (%.1fx); connect first/last: kube-proxy %s/%s baregate %s/%s; kube-proxy RSS %d MB, baregate heap %d MB",
					n, kp.full, bg.full, kp.full.Seconds()/bg.full.Seconds(), kp.change, bg.change, kp.change.Seconds()/bg.change.Seconds(),
					kp.connectFirst, kp.connectLast, bg.connectFirst, bg.connectLast, kp.rssKB/1024, bg.rssKB/1024)
			}
		})
	}
}

// progress reports on stderr at once: benchmark logs only appear when a benchmark ends, and this one
// takes minutes.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

type syncTimes struct {
	full, change              time.Duration
	connectFirst, connectLast time.Duration
	rssKB                     int
}

// connectTries is how many connections each connect-time figure is the median of.
const connectTries = 31

// serveEndpoints makes every pod address (198.18.0.0/16) local to namespace ns and accepts TCP on
// port 8080 there, so connections through the rules complete; Service IPs route to lo so that the
// node's own connections reach the NAT hooks.
func serveEndpoints(b *testing.B, ns string) {
	mustRun(b, "ip", "-n", ns, "link", "set", "lo", "up")
	mustRun(b, "ip", "-n", ns, "addr", "add", "192.0.2.1/32", "dev", "lo")
	mustRun(b, "ip", "-n", ns, "route", "add", "local", "198.18.0.0/16", "dev", "lo")
	mustRun(b, "ip", "-n", ns, "route", "add", k8slab.ServiceCIDRv4, "dev", "lo", "src", "192.0.2.1")
	var l net.Listener
	if err := k8slab.InNetns(ns, func() (err error) {
		l, err = net.Listen("tcp", ":8080")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// connectTimes returns the median TCP connect time from namespace ns to the first and the last of n
// Services (scaleWorld's s00000 and s<n-1>), port 80.
func connectTimes(b *testing.B, client kubernetes.Interface, ns string, n int) (first, last time.Duration) {
	dial := k8slab.DialContextIn(ns)
	median := func(name string) time.Duration {
		svc, err := client.CoreV1().Services("ns").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		addr := net.JoinHostPort(svc.Spec.ClusterIP, "80")
		var times []time.Duration
		for range connectTries {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			start := time.Now()
			c, err := dial(ctx, "tcp", addr)
			d := time.Since(start)
			cancel()
			if err != nil {
				b.Fatalf("connecting to %s (%s) in %s: %v", name, addr, ns, err)
			}
			c.Close()
			times = append(times, d)
		}
		slices.Sort(times)
		return times[len(times)/2]
	}
	return median("s00000"), median(fmt.Sprintf("s%05d", n-1))
}

func mustRun(b testing.TB, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// createScale creates Services from..n-1 of scaleWorld(n) with their EndpointSlices.
func createScale(b *testing.B, client kubernetes.Interface, from, n int) {
	ctx := context.Background()
	w := scaleWorld(n)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}}, metav1.CreateOptions{}); err != nil && from == 0 {
		b.Fatal(err)
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				s := w.services[i].DeepCopy()
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil // let the API server allocate
				_, err := client.CoreV1().Services("ns").Create(ctx, s, metav1.CreateOptions{})
				if err == nil {
					_, err = client.DiscoveryV1().EndpointSlices("ns").Create(ctx, w.slices[i], metav1.CreateOptions{})
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for i := from; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

// benchSizes is $BAREGATE_BENCH_SIZES (comma-separated Service counts), or def.
func benchSizes(b *testing.B, def ...int) []int {
	s := os.Getenv("BAREGATE_BENCH_SIZES")
	if s == "" {
		return def
	}
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			b.Fatalf("BAREGATE_BENCH_SIZES: %v", err)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// changeOne removes one endpoint from Service s00000's slice (or puts it back), the one-change case.
func changeOne(b *testing.B, client kubernetes.Interface) *discoveryv1.EndpointSlice {
	ctx := context.Background()
	es, err := client.DiscoveryV1().EndpointSlices("ns").Get(ctx, "s00000-1", metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if len(es.Endpoints) == 10 {
		es.Endpoints = es.Endpoints[:9]
	} else {
		es.Endpoints = scaleWorld(1).slices[0].Endpoints
	}
	es, err = client.DiscoveryV1().EndpointSlices("ns").Update(ctx, es, metav1.UpdateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return es
}

// runKubeProxy starts kube-proxy (nftables mode) in the control plane's namespace, waits for its
// first full sync, makes one change, waits for the partial sync, and stops it.
func runKubeProxy(b *testing.B, cp *k8slab.ControlPlane, ns, bin string, client kubernetes.Interface, n int) syncTimes {
	dir := b.TempDir()
	logf, err := os.Create(filepath.Join(dir, "kube-proxy.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", ns, filepath.Join(bin, "kube-proxy"),
		"--kubeconfig="+cp.KubeconfigPath(), "--proxy-mode=nftables", "--hostname-override="+nodeA,
		"--cluster-cidr=198.18.0.0/16", "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
		"--conntrack-max-per-core=0", "--v=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		// kube-proxy leaves its tables; remove them so the next size starts cold.
		_ = exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "kube-proxy").Run()
		_ = exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "ip6", "kube-proxy").Run()
	}()
	httpc := &http.Client{Transport: &http.Transport{DialContext: k8slab.DialContextIn(ns)}, Timeout: 10 * time.Second}
	metric := func(name string) float64 {
		resp, err := httpc.Get("http://127.0.0.1:10249/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			// kube-proxy labels its sync metrics by family; the IPv4 one is what the benchmark programs.
			if f := strings.Fields(sc.Text()); len(f) == 2 && (f[0] == name || f[0] == name+`{ip_family="IPv4"}`) {
				v, _ := strconv.ParseFloat(f[1], 64)
				return v
			}
		}
		return -1
	}
	wait := func(name string, above float64) {
		deadline := time.Now().Add(15 * time.Minute)
		for metric(name) <= above {
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(logf.Name())
				b.Fatalf("kube-proxy: %s stayed at most %v; log:\n%s", name, above, log)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	const fullCount, fullSum = "kubeproxy_sync_full_proxy_rules_duration_seconds_count", "kubeproxy_sync_full_proxy_rules_duration_seconds_sum"
	const partCount, partSum = "kubeproxy_sync_partial_proxy_rules_duration_seconds_count", "kubeproxy_sync_partial_proxy_rules_duration_seconds_sum"
	wait(fullCount, 0)
	progress("kube-proxy synced %d Services", n)
	var t syncTimes
	t.full = time.Duration(metric(fullSum) * float64(time.Second))
	t.connectFirst, t.connectLast = connectTimes(b, client, ns, n)
	// Let any follow-up syncs of the start settle before the change.
	time.Sleep(3 * time.Second)
	count, sum := max(metric(partCount), 0), max(metric(partSum), 0)
	changeOne(b, client)
	wait(partCount, count)
	t.change = time.Duration((metric(partSum) - sum) / (metric(partCount) - count) * float64(time.Second))
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				t.rssKB, _ = strconv.Atoi(f[1])
			}
		}
	}
	return t
}

// runBaregate lists the same objects, syncs them into a fresh namespace, then syncs the same one change.
func runBaregate(b *testing.B, client kubernetes.Interface, n int) syncTimes {
	ctx := context.Background()
	ns := benchNetns(b)
	nsName := fmt.Sprintf("npbench%d", os.Getpid())
	serveEndpoints(b, nsName)
	var p *Proxy
	var err error
	in(b, ns, func() {
		p, err = New(Config{MasqueradeBit: 14, HealthzTimeout: time.Minute, ClusterCIDRs: []string{"198.18.0.0/16"}}, cluster.Deps{})
	})
	if err != nil {
		b.Fatal(err)
	}
	// One cluster.Builder, as the gateway keeps: the change's snapshot shares every other Service.
	cb := cluster.NewBuilder(nodeA, nil)
	svcs, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	slices, err := client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range svcs.Items {
		cb.Set(&svcs.Items[i])
	}
	for i := range slices.Items {
		cb.Set(&slices.Items[i])
	}
	sync := func() time.Duration {
		start := time.Now()
		in(b, ns, func() { err = p.sync(ctx) })
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var t syncTimes
	p.Update(cb.Build(1, time.Now()))
	t.full = sync()
	t.connectFirst, t.connectLast = connectTimes(b, client, nsName, n)
	cb.Set(changeOne(b, client))
	p.Update(cb.Build(2, time.Now()))
	t.change = sync()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.rssKB = int(ms.HeapAlloc / 1024)
	runtime.KeepAlive(p)
	return t
}
