package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// check is one named health condition; nil means fine.
type check struct {
	name string
	fn   func() error
}

// adminServer serves the probes and metrics. /livez answers as long as the process works, so an API
// server outage never gets a gateway (and its data plane) restarted; /readyz and /healthz aggregate
// the components' checks.
type adminServer struct {
	gather  prometheus.Gatherer
	ready   []check
	healthy []check
}

func (a *adminServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.gather, promhttp.HandlerOpts{}))
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { writeChecks(w, r, nil) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { writeChecks(w, r, a.ready) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { writeChecks(w, r, a.healthy) })
	return mux
}

// writeChecks answers like the Kubernetes components do: 200 "ok", or 503 listing what failed;
// ?verbose lists every check.
func writeChecks(w http.ResponseWriter, r *http.Request, checks []check) {
	var b strings.Builder
	failed := false
	for _, c := range checks {
		if err := c.fn(); err != nil {
			failed = true
			fmt.Fprintf(&b, "[-]%s failed: %v\n", c.name, err)
		} else {
			fmt.Fprintf(&b, "[+]%s ok\n", c.name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if failed {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, b.String())
		return
	}
	if _, verbose := r.URL.Query()["verbose"]; verbose {
		fmt.Fprint(w, b.String())
	}
	fmt.Fprint(w, "ok")
}

// run serves until ctx ends.
func (a *adminServer) run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	klog.FromContext(ctx).Info("Serving health and metrics", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving admin endpoints: %w", err)
	}
	return nil
}
