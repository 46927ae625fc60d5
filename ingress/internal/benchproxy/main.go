// Command benchproxy runs baregate's ingress component outside a cluster, routing every request to
// fixed backend addresses, for hack/bench-ingress.sh to measure against nginx and HAProxy.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/baregate/baregate/ingress"
	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/internal/cluster"
	"github.com/spf13/pflag"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:18084", "HTTP listen address")
	httpsAddr := flag.String("https", "127.0.0.1:18446", "HTTPS listen address")
	backends := flag.String("backends", "127.0.0.1:18081", "comma-separated backend ip:port list (distinct IPs)")
	noFast := flag.Bool("disable-fast-path", false, "use net/http's server and Transport for every request")
	noLoop := flag.Bool("disable-event-loop", false, "serve each plain HTTP connection with a goroutine instead of the event loops")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	traceFile := flag.String("trace", "", "write a runtime trace of the whole run to this file")
	memProfile := flag.String("memprofile", "", "write an allocation profile of the whole run to this file at exit")
	flag.Parse()
	if *memProfile != "" {
		runtime.MemProfileRate = 4096
		defer func() {
			f, err := os.Create(*memProfile)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err == nil {
			err = trace.Start(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer trace.Stop()
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*httpAddr, *httpsAddr, strings.Split(*backends, ","), *noFast, *noLoop); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(httpAddr, httpsAddr string, backends []string, noFast, noLoop bool) error {
	var cfg ingress.Config
	cfg.AddFlags(pflag.NewFlagSet("bench", pflag.ContinueOnError))
	cfg.HTTPAddress, cfg.HTTPSAddress, cfg.DisableFastPath, cfg.DisableEventLoop = httpAddr, httpsAddr, noFast, noLoop
	ing, err := ingress.New(cfg, cluster.Deps{NodeName: "node1"})
	if err != nil {
		return err
	}
	var slices []*discoveryv1.EndpointSlice
	for i, b := range backends {
		if _, err := netip.ParseAddrPort(b); err != nil {
			return fmt.Errorf("backend %q: %w", b, err)
		}
		slices = append(slices, fx.Slice("bench", fmt.Sprintf("bench-%d", i), fx.EP{Addr: b, Node: "node1"}))
	}
	in := cluster.Inputs{
		NodeName:       "node1",
		IngressClasses: []*networkingv1.IngressClass{fx.Class()},
		Ingresses:      []*networkingv1.Ingress{fx.Ingress("bench", 0, fx.Rule("", fx.Path("Prefix", "/", fx.Backend("bench", 80))))},
		Services:       []*corev1.Service{fx.Service("bench", 80)},
		EndpointSlices: slices,
	}
	ing.Update(cluster.NewSnapshot(1, time.Now(), in))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return ing.Run(ctx)
}
