package echo

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/pflag"
)

// Modes of answering HTTP requests.
const (
	// ModeEcho answers with a JSON Response describing the request.
	ModeEcho = "echo"
	// ModeStatic answers every request with a fixed body: the cheapest backend for benchmarks.
	ModeStatic = "static"
	// ModeHostname answers every request with the pod name, as agnhost serve-hostname does.
	ModeHostname = "hostname"
)

// Config says what the echo program serves.
type Config struct {
	// Host is the address listened on; empty means every address of the namespace.
	Host string
	// Ports are the TCP ports serving HTTP/1.1, h2c, WebSocket and gRPC health.
	Ports []int
	// UDPPorts echo datagrams; the TCP port numbers are always among them.
	UDPPorts []int
	// Mode is ModeEcho, ModeStatic or ModeHostname.
	Mode string
	// Body is what ModeStatic answers.
	Body string
	// DelayShutdown keeps serving this long after the program is told to stop, like agnhost
	// netexec --delay-shutdown, so tests can watch a terminating endpoint that still serves.
	DelayShutdown time.Duration
	// Names are what the program reports about itself.
	Names Names
}

// Names identify the pod in every answer; the lab kubelet passes them as environment variables.
type Names struct {
	Pod, Namespace, Ingress, Service string
}

// NamesFromEnv reads the names the conformance echo images read: POD_NAME (or HOSTNAME, which a
// container runtime sets to the pod name), NAMESPACE, INGRESS_NAME and SERVICE_NAME.
func NamesFromEnv(getenv func(string) string) Names {
	n := Names{
		Pod:       getenv("POD_NAME"),
		Namespace: getenv("NAMESPACE"),
		Ingress:   getenv("INGRESS_NAME"),
		Service:   getenv("SERVICE_NAME"),
	}
	if n.Pod == "" {
		n.Pod = getenv("HOSTNAME")
	}
	return n
}

// ParseArgs reads the command line of `pod-run echo`.
func ParseArgs(args []string, getenv func(string) string) (Config, error) {
	cfg := Config{Names: NamesFromEnv(getenv)}
	fs := pflag.NewFlagSet("echo", pflag.ContinueOnError)
	fs.StringVar(&cfg.Host, "host", "", "address to listen on (default: all addresses)")
	fs.IntSliceVar(&cfg.Ports, "port", nil, "TCP port serving HTTP/1.1, h2c, WebSocket and gRPC health; repeatable (default 3000,8080)")
	fs.IntSliceVar(&cfg.UDPPorts, "udp-port", nil, "extra UDP echo port; repeatable (the TCP ports always echo UDP too)")
	fs.StringVar(&cfg.Mode, "mode", ModeEcho, "how to answer HTTP: echo (JSON about the request), static (fixed body), hostname (pod name)")
	fs.StringVar(&cfg.Body, "body", "ok\n", "body answered in static mode")
	delay := fs.Int("delay-shutdown", 0, "seconds to keep serving after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("parsing echo arguments: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected echo arguments %q", fs.Args())
	}
	cfg.DelayShutdown = time.Duration(*delay) * time.Second
	if len(cfg.Ports) == 0 {
		// The echo images of the Ingress and Gateway API conformance suites listen on 3000,
		// agnhost netexec on 8080.
		cfg.Ports = []int{3000, 8080}
	}
	return cfg, cfg.Validate()
}

// Validate reports bad ports and modes.
func (c *Config) Validate() error {
	for _, p := range append(slices.Clone(c.Ports), c.UDPPorts...) {
		if p < 0 || p > 65535 {
			return fmt.Errorf("port %d is out of range 0-65535", p)
		}
	}
	switch c.Mode {
	case ModeEcho, ModeStatic, ModeHostname:
	default:
		return fmt.Errorf("unknown mode %q (want echo, static or hostname)", c.Mode)
	}
	if c.DelayShutdown < 0 {
		return fmt.Errorf("delay-shutdown %v is negative", c.DelayShutdown)
	}
	return nil
}
