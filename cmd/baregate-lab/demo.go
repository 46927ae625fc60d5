package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/baregate/baregate/internal/lab"
)

//go:embed demo.yaml
var demoManifest []byte

// dashboardPort is where the gateway's dashboard listens on each node's loopback (ui's default).
const dashboardPort = 9711

func cmdDemo(ctx context.Context, args []string) error {
	var f upFlags
	var noGateway bool
	var uiPort int
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	f.add(fs)
	fs.BoolVar(&noGateway, "no-gateway", false, "Do not run baregate on the nodes; show only the lab and the pods.")
	fs.IntVar(&uiPort, "ui-port", dashboardPort, "Port on this host's 127.0.0.1 forwarded to node1's dashboard.")
	_ = fs.Set("id", "demo")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.detach {
		return errors.New("demo runs in the foreground; use `up --detach` and `apply` for a lab in the background")
	}
	f.gateway = !noGateway
	o, err := f.options()
	if err != nil {
		return err
	}
	if o.StartGateway && o.GatewayBinary == "" {
		p, err := lab.BuildBinary(ctx, "./cmd/baregate", lab.DefaultDir(o.ID)+"-bin")
		if err != nil {
			fmt.Fprintf(os.Stderr, "no baregate binary (%v); the demo runs without the gateway\n", firstLine(err))
			o.StartGateway = false
		} else {
			o.GatewayBinary = p
		}
	}
	l, err := upWithProgress(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\nstopping the lab ...")
		if err := l.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "baregate-lab:", err)
		}
	}()
	fmt.Fprintln(os.Stderr, "deploying the sample app (3 echo pods, a LoadBalancer Service, an Ingress for demo.example) ...")
	if err := lab.Apply(ctx, l.RESTConfig(), demoManifest); err != nil {
		return err
	}
	cs := l.Client()
	if err := waitReadyEndpoints(ctx, cs, "default", "echo", 3, 2*time.Minute); err != nil {
		return err
	}
	printInfo(os.Stdout, l.Info())
	fmt.Println()
	if o.StartGateway {
		if err := forwardDashboard(ctx, l, uiPort); err != nil {
			fmt.Fprintf(os.Stderr, "dashboard not forwarded: %v\n", err)
		} else {
			url := fmt.Sprintf("http://127.0.0.1:%d/", uiPort)
			note := ""
			if err := httpOK(ctx, url); err != nil {
				note = "   (not answering yet: " + firstLine(err) + ")"
			}
			fmt.Printf("Dashboard (node1's baregate, forwarded from its loopback): %s%s\n\n", url, note)
		}
	}
	printDemoCommands(ctx, l, o.StartGateway)
	fmt.Println("\nPress Ctrl-C to stop the demo and remove the lab.")
	<-ctx.Done()
	return nil
}

// printDemoCommands tries each command before showing it, so what the reader copies works.
func printDemoCommands(ctx context.Context, l *lab.Lab, gateway bool) {
	cs := l.Client()
	id := l.Options().ID
	self := selfName()
	type try struct{ what, host, url, hostHeader string }
	var tries []try
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
	if err == nil && len(pods.Items) > 0 {
		tries = append(tries, try{"a pod, straight from a client (pod routes)", "client1", "http://" + hostPortStr(pods.Items[0].Status.PodIP, 3000) + "/", ""})
	}
	if gateway {
		if ip := waitLBIP(ctx, cs, "default", "echo", 30*time.Second); ip != "" {
			tries = append(tries, try{"the LoadBalancer IP of Service echo", "client1", "http://" + hostPortStr(ip, 80) + "/", ""})
		}
		if ip := waitLBIP(ctx, cs, lab.GatewayNamespace, "baregate", 10*time.Second); ip != "" {
			tries = append(tries, try{"the Ingress for demo.example through baregate's ingress Service", "client1", "http://demo.example/", ip})
		}
	}
	if l.Options().Clients == 0 {
		return
	}
	fmt.Println("Try (each was just run successfully unless marked):")
	for _, t := range tries {
		argv := []string{"curl", "-sS", "--max-time", "5"}
		if t.hostHeader != "" {
			argv = append(argv, "--resolve", "demo.example:80:"+t.hostHeader)
		}
		argv = append(argv, t.url)
		// A freshly assigned IP takes a moment to be programmed on its node: retry briefly, so what is
		// printed reflects the lab's steady state rather than its first second.
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = l.Exec(cctx, t.host, argv...)
			cancel()
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		mark := ""
		if err != nil {
			mark = "   # not answering yet: " + firstLine(err)
		}
		fmt.Printf("  # %s\n  %s exec --id %s %s -- %s%s\n", t.what, self, id, t.host, strings.Join(argv, " "), mark)
	}
	fmt.Printf("  # the lab's nodes and pods\n  %s status --id %s\n", self, id)
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func hostPortStr(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// waitReadyEndpoints waits until the Service's EndpointSlices list n ready endpoints.
func waitReadyEndpoints(ctx context.Context, cs kubernetes.Interface, ns, svc string, n int, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		return lab.ReadyEndpoints(ctx, cs, ns, svc) >= n, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %d ready endpoints of Service %s/%s: %w", n, ns, svc, err)
	}
	return nil
}

// waitLBIP returns the Service's first load-balancer IP, or "" if none comes within timeout.
func waitLBIP(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) string {
	var ip string
	_ = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			return false, nil
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				ip = in.IP
				return true, nil
			}
		}
		return false, nil
	})
	return ip
}

// forwardDashboard makes node1's loopback-only dashboard reachable on this host's loopback.
func forwardDashboard(ctx context.Context, l *lab.Lab, port int) error {
	ln, err := net.Listen("tcp", hostPortStr("127.0.0.1", port))
	if err != nil {
		return err
	}
	dial := lab.DialContextIn(l.NodeNetns(1))
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := dial(ctx, "tcp", hostPortStr("127.0.0.1", dashboardPort))
				if err != nil {
					return
				}
				defer up.Close()
				pipe(c, up)
			}()
		}
	}()
	return nil
}

// pipe copies both ways until either side ends.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// selfName is how the user can call this binary from where they are: "baregate-lab" when it is on
// PATH, else a path relative to the working directory (bin/baregate-lab after make demo).
func selfName() string {
	self, err := os.Executable()
	if err != nil {
		return "baregate-lab"
	}
	if p, err := exec.LookPath("baregate-lab"); err == nil && p == self {
		return "baregate-lab"
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, self); err == nil && !strings.HasPrefix(rel, "..") {
			if !strings.Contains(rel, "/") {
				rel = "./" + rel
			}
			return rel
		}
	}
	return self
}

func httpOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}
