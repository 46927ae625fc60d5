package nodeport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// healthServers runs one HTTP server per healthCheckNodePort, answering as kube-proxy does so that
// external load balancers send externalTrafficPolicy=Local traffic only to nodes with local endpoints.
type healthServers struct {
	bind string
	// proxyHealthy reports whether the rules are current; a stale node answers 503 too.
	proxyHealthy func() bool

	mu      sync.Mutex
	servers map[int32]*healthServer
}

type healthServer struct {
	srv   *http.Server
	state atomic.Pointer[HealthCheck]
	owner *healthServers
}

func newHealthServers(bind string, proxyHealthy func() bool) *healthServers {
	return &healthServers{bind: bind, proxyHealthy: proxyHealthy, servers: map[int32]*healthServer{}}
}

// update starts servers for new ports, stops those no longer wanted and swaps in the new counts. A
// port that cannot be bound is reported and retried on the next update.
func (h *healthServers) update(ctx context.Context, want map[int32]HealthCheck) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	logger := klog.FromContext(ctx)
	for port, s := range h.servers {
		if _, ok := want[port]; !ok {
			_ = s.srv.Close()
			delete(h.servers, port)
			logger.V(2).Info("Stopped health check server", "port", port)
		}
	}
	var errs []error
	for port, hc := range want {
		s := h.servers[port]
		if s == nil {
			ln, err := net.Listen("tcp", net.JoinHostPort(h.bind, strconv.Itoa(int(port))))
			if err != nil {
				errs = append(errs, fmt.Errorf("listening for the health checks of %s on port %d: %w", hc.Service, port, err))
				continue
			}
			s = &healthServer{owner: h}
			s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
			h.servers[port] = s
			go func() {
				if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					logger.Error(err, "Health check server stopped", "port", port)
				}
			}()
			logger.V(2).Info("Started health check server", "port", port, "service", hc.Service)
		}
		s.state.Store(&hc)
	}
	return errors.Join(errs...)
}

// close stops every server.
func (h *healthServers) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, s := range h.servers {
		_ = s.srv.Close()
		delete(h.servers, port)
	}
}

type healthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (s *healthServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	hc := s.state.Load()
	healthy := s.owner.proxyHealthy()
	var body healthBody
	body.Service.Namespace, body.Service.Name = hc.Service.Namespace, hc.Service.Name
	body.LocalEndpoints, body.ServiceProxyHealthy = hc.LocalEndpoints, healthy
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(hc.LocalEndpoints))
	if hc.LocalEndpoints > 0 && healthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}
