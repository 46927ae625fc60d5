package nodeport

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/testutil"
)

// scaleWorld has n Services (the first 2,700 NodePort ones) with 10 endpoints each, spread over the
// two nodes.
func scaleWorld(n int) *world {
	w := &world{}
	for i := range n {
		name := fmt.Sprintf("s%05d", i)
		s := svc(name, fmt.Sprintf("198.19.%d.%d", i/250, i%250+1))
		if i < 2700 { // the NodePort range holds 2768 ports
			nodePort(int32(30000 + i))(s)
		}
		w.services = append(w.services, s)
		var eps []discoveryv1.Endpoint
		for j := range 10 {
			node := nodeA
			if j%2 == 1 {
				node = nodeB
			}
			eps = append(eps, ep(fmt.Sprintf("198.18.%d.%d", 1+j%2, (i*10+j)%250+1), node))
		}
		w.slices = append(w.slices, slice(name, name+"-1", nil, eps...))
	}
	return w
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		snap := scaleWorld(n).snapshot()
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				Build(snap, testOpts)
			}
		})
	}
}

// BenchmarkOneChange is the CPU side of a one-Service change at 10k Services, from the changed
// EndpointSlice to the ops: the snapshot (one cluster.Builder, as the gateway keeps), the build
// (reusing every other Service's piece) and the diff, alternating between two versions of one
// Service's endpoints.
func BenchmarkOneChange(b *testing.B) {
	w := scaleWorld(10000)
	cb := w.builder()
	bl := NewBuilder()
	k := newKernelState(bl.Build(cb.Build(1, time.Now()), testOpts))
	versions := [2]*discoveryv1.EndpointSlice{w.slices[5000], slice("s05000", "s05000-1", nil, ep("198.18.1.99", nodeA))}
	i := 0
	for b.Loop() {
		i++
		cb.Set(versions[i%2])
		ops := k.diff(bl.Build(cb.Build(uint64(i+1), time.Now()), testOpts))
		if len(ops) == 0 {
			b.Fatal("no change")
		}
		tx := knftables.NewFake("", "").NewTransaction()
		addOps(tx, ops)
	}
}

// benchNetns returns a fresh network namespace, deleted when b ends.
func benchNetns(b *testing.B) netns.NsHandle {
	testutil.RequireRoot(b)
	name := fmt.Sprintf("npbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

// BenchmarkKernelSync programs n Services x 10 endpoints ($BAREGATE_BENCH_SIZES, default
// 1000,10000) into a fresh network namespace from a cold start (full), then measures one Service's change with all of them present (partial), from the
// changed EndpointSlice (one cluster.Builder, as the gateway keeps) to the kernel. Besides wall time
// it reports CPU time (this process and the nft it runs), which a loaded machine inflates less.
func BenchmarkKernelSync(b *testing.B) {
	for _, n := range benchSizes(b, 1000, 10000) {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := benchNetns(b)
			w := scaleWorld(n)
			cb := w.builder()
			var p *Proxy
			var err error
			in(b, ns, func() {
				p, err = New(Config{MasqueradeBit: 14, HealthzTimeout: 60e9}, cluster.Deps{})
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			p.Update(cb.Build(1, time.Now()))
			start, cpu := time.Now(), cpuTime()
			in(b, ns, func() { err = p.sync(ctx) })
			if err != nil {
				b.Fatal(err)
			}
			full, fullCPU := time.Since(start), cpuTime()-cpu
			i := 0
			cpu = cpuTime()
			for b.Loop() {
				i++
				cb.Set(slice(w.services[n/2].Name, w.services[n/2].Name+"-1", nil, ep(fmt.Sprintf("198.18.1.%d", i%250+1), nodeA)))
				p.Update(cb.Build(uint64(i+1), time.Now()))
				in(b, ns, func() { err = p.sync(ctx) })
				if err != nil {
					b.Fatal(err)
				}
			}
			// After the loop: b.Loop resets the timer and metrics when it starts.
			b.ReportMetric((cpuTime()-cpu).Seconds()*1000/float64(b.N), "change-cpu-ms")
			b.ReportMetric(full.Seconds()*1000, "full-sync-ms")
			b.ReportMetric(fullCPU.Seconds()*1000, "full-sync-cpu-ms")
		})
	}
}

// cpuTime is the CPU time used so far by this process and its waited-for children (nft).
func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}
