package ingress

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
	"github.com/baregate/baregate/internal/cluster"
)

// harness runs the ingress component on loopback listeners with a fake API client.
type harness struct {
	t        testing.TB
	ing      *Ingress
	client   *fake.Clientset
	recorder *record.FakeRecorder
	reg      *prometheus.Registry
	httpURL  string
	httpsURL string // "" without an HTTPS listener
	gen      atomic.Uint64
	stop     func() error // stops the Ingress (once, also at cleanup) and returns Run's error
}

func newHarness(t testing.TB, mut ...func(*Config)) *harness {
	t.Helper()
	var cfg Config
	fs := newFlagSet()
	cfg.AddFlags(fs)
	cfg.HTTPAddress, cfg.HTTPSAddress = "127.0.0.1:0", "127.0.0.1:0"
	for _, m := range mut {
		m(&cfg)
	}
	h := &harness{t: t, client: fake.NewClientset(), recorder: record.NewFakeRecorder(100), reg: prometheus.NewRegistry()}
	ing, err := New(cfg, cluster.Deps{NodeName: "node1", Namespace: "baregate-system", Client: h.client, Recorder: h.recorder, Metrics: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	h.ing = ing
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ing.Run(ctx) }()
	h.stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for ing.Addrs() == nil {
		select {
		case err := <-done:
			done <- err // for stop
			t.Fatalf("Run ended early: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	addrs := ing.Addrs()
	h.httpURL = "http://" + addrs[0].String()
	if len(addrs) > 1 {
		h.httpsURL = "https://" + addrs[1].String()
	}
	return h
}

// apply hands the component a snapshot and waits until its route table is in force.
func (h *harness) apply(in cluster.Inputs) *cluster.Snapshot {
	h.t.Helper()
	in.IngressClasses = append(in.IngressClasses, fx.Class())
	in.NodeName = "node1"
	snap := cluster.NewSnapshot(h.gen.Add(1), time.Now(), in)
	before := h.ing.proxy.Table()
	h.ing.Update(snap)
	deadline := time.Now().Add(10 * time.Second)
	for h.ing.proxy.Table() == before {
		if time.Now().After(deadline) {
			h.t.Fatal("route table not applied within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	return snap
}

// backend is a local HTTP server standing in for a pod, on its own loopback address so that each
// backend is a distinct endpoint address.
type backend struct {
	name string
	addr string // ip:port
	srv  *http.Server
	hits atomic.Int64
}

var nextLoopback atomic.Uint32

// startBackend serves handler on a fresh 127.0.0.x address. h2c enables HTTP/2 without TLS.
func startBackend(t testing.TB, name string, h2c bool, handler http.HandlerFunc) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+nextLoopback.Add(1)%250))
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String()}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(h2c)
	b.srv = &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("X-Backend", name)
		handler(w, r)
	})}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func okHandler(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }

// deadAddr returns a loopback address nothing listens on (connections are refused).
func deadAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+nextLoopback.Add(1)%250))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serviceInputs returns a Service named svc with one endpoint slice per address (ports may differ).
func serviceInputs(svc string, addrs ...string) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var slices []*discoveryv1.EndpointSlice
	for i, a := range addrs {
		slices = append(slices, fx.Slice(svc, fmt.Sprintf("%s-%d", svc, i), fx.EP{Addr: a, Node: "node1"}))
	}
	return []*corev1.Service{fx.Service(svc, 80)}, slices
}

// simple routes host (any path) to one Service backed by the given endpoint addresses.
func simple(host, svc string, addrs ...string) cluster.Inputs {
	svcs, slices := serviceInputs(svc, addrs...)
	return cluster.Inputs{
		Ingresses:      []*networkingv1.Ingress{fx.Ingress(svc, 0, fx.Rule(host, fx.Path("Prefix", "/", fx.Backend(svc, 80))))},
		Services:       svcs,
		EndpointSlices: slices,
	}
}

func merge(ins ...cluster.Inputs) cluster.Inputs {
	var out cluster.Inputs
	for _, in := range ins {
		out.Ingresses = append(out.Ingresses, in.Ingresses...)
		out.Services = append(out.Services, in.Services...)
		out.EndpointSlices = append(out.EndpointSlices, in.EndpointSlices...)
		out.Secrets = append(out.Secrets, in.Secrets...)
	}
	return out
}

// get sends a request with the given Host and returns status, body and the X-Backend header.
func (h *harness) get(c *http.Client, host, path string) (int, string, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.httpURL+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), resp.Header.Get("X-Backend")
}

func tlsClient(serverName string) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: serverName}, ForceAttemptHTTP2: true}}
}
