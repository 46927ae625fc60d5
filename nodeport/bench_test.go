package nodeport

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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

// BenchmarkOneChange is the CPU side of a one-Service change at 10k Services: build (reusing every
// other Service's piece) and diff, alternating between two versions of one Service's endpoints.
func BenchmarkOneChange(b *testing.B) {
	w := scaleWorld(10000)
	bl := NewBuilder()
	snaps := [2]*cluster.Snapshot{w.snapshot()}
	w.slices[5000] = slice("s05000", "s05000-1", nil, ep("198.18.1.99", nodeA))
	snaps[1] = w.snapshot()
	k := newKernelState(bl.Build(snaps[0], testOpts))
	i := 0
	for b.Loop() {
		i++
		ops := k.diff(bl.Build(snaps[i%2], testOpts))
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

// BenchmarkKernelSync programs n Services x 10 endpoints into a fresh network namespace from a cold
// start (full), then measures one Service's change with all of them present (partial).
func BenchmarkKernelSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ns := benchNetns(b)
			w := scaleWorld(n)
			var p *Proxy
			var err error
			in(b, ns, func() {
				p, err = New(Config{MasqueradeBit: 14, HealthzTimeout: 60e9}, cluster.Deps{})
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			p.Update(w.snapshot())
			start := time.Now()
			in(b, ns, func() { err = p.sync(ctx) })
			if err != nil {
				b.Fatal(err)
			}
			full := time.Since(start)
			i := 0
			for b.Loop() {
				i++
				w.slices[n/2] = slice(w.services[n/2].Name, w.services[n/2].Name+"-1", nil, ep(fmt.Sprintf("198.18.1.%d", i%250+1), nodeA))
				p.Update(w.snapshot())
				in(b, ns, func() { err = p.sync(ctx) })
				if err != nil {
					b.Fatal(err)
				}
			}
			// After the loop: b.Loop resets the timer and metrics when it starts.
			b.ReportMetric(full.Seconds()*1000, "full-sync-ms")
		})
	}
}
