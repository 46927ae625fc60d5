package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Main runs the echo program until SIGTERM or SIGINT.
func Main(args []string) error {
	cfg, err := ParseArgs(args, os.Getenv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := Listen(cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Server is a bound echo program: its sockets are open once Listen returns, so a caller that asked
// for port 0 can learn the ports before serving.
type Server struct {
	cfg  Config
	tcp  []net.Listener
	udp  []net.PacketConn
	http *http.Server
	grpc *grpc.Server
	// stopping is closed when serving ends, to end hijacked WebSocket connections.
	stopping chan struct{}
}

// Listen opens every TCP and UDP socket of cfg. A TCP port 0 gets a free port, and its UDP echo
// the same number.
func Listen(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, stopping: make(chan struct{})}
	udpPorts := []int{}
	// A port may be named twice (an agnhost flag and the Pod's containerPort); it is served once.
	for _, p := range dedup(cfg.Ports) {
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(p)))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("listening on TCP port %d: %w", p, err)
		}
		s.tcp = append(s.tcp, l)
		udpPorts = append(udpPorts, l.Addr().(*net.TCPAddr).Port)
	}
	for _, p := range dedup(append(udpPorts, cfg.UDPPorts...)) {
		c, err := net.ListenPacket("udp", net.JoinHostPort(cfg.Host, strconv.Itoa(p)))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("listening on UDP port %d: %w", p, err)
		}
		s.udp = append(s.udp, c)
	}

	s.grpc = grpc.NewServer()
	// health.NewServer reports the overall service "" as SERVING.
	healthpb.RegisterHealthServer(s.grpc, health.NewServer())
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.http = &http.Server{Handler: s, Protocols: protocols, ReadHeaderTimeout: 30 * time.Second}
	return s, nil
}

// TCPAddrs are the addresses serving HTTP.
func (s *Server) TCPAddrs() []net.Addr {
	out := []net.Addr{}
	for _, l := range s.tcp {
		out = append(out, l.Addr())
	}
	return out
}

// UDPAddrs are the addresses echoing datagrams.
func (s *Server) UDPAddrs() []net.Addr {
	out := []net.Addr{}
	for _, c := range s.udp {
		out = append(out, c.LocalAddr())
	}
	return out
}

// Serve answers until ctx ends, keeps answering for the configured shutdown delay, then closes
// every socket and waits briefly for requests in flight.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(s.tcp))
	for _, l := range s.tcp {
		wg.Go(func() {
			if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serving HTTP on %s: %w", l.Addr(), err)
			}
		})
	}
	for _, c := range s.udp {
		wg.Go(func() { s.serveUDP(c) })
	}
	var err error
	select {
	case <-ctx.Done():
		time.Sleep(s.cfg.DelayShutdown)
	case err = <-errs:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Shutdown leaves hijacked WebSocket and HTTP/2 gRPC streams alone; Stop ends them.
	_ = s.http.Shutdown(shutdownCtx)
	s.grpc.Stop()
	close(s.stopping)
	s.close()
	wg.Wait()
	return err
}

func (s *Server) close() {
	for _, l := range s.tcp {
		l.Close()
	}
	for _, c := range s.udp {
		c.Close()
	}
}

// dedup returns ports without repeats, in first-seen order. Port 0 (any free port) is kept every time.
func dedup(ports []int) []int {
	seen := map[int]bool{}
	out := []int{}
	for _, p := range ports {
		if p != 0 && seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}
