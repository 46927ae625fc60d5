// Package pebbletest runs Pebble, Let's Encrypt's ACME test server, for integration tests: built once
// from the Go module proxy into ~/.cache/baregate/bin, with a small DNS server that sends every name to loopback.
package pebbletest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baregate/baregate/ingress/selfsigned"
)

// Version is the Pebble release the tests build.
const Version = "v2.10.3"

// Options say where Pebble serves and where its validator connects for the challenges.
type Options struct {
	HTTPPort, TLSPort int
	// ListenIP is the address Pebble serves on (default 127.0.0.1, on free ports). Elsewhere it
	// serves the directory on Port (default 14000) and the management API on Port+1000.
	ListenIP string
	Port     int
	// Command prepares Pebble's command line (default exec.Command); a lab runs it in a host's
	// network namespace.
	Command func(argv ...string) *exec.Cmd
	// Dial reaches Pebble (default: from the test's own network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Hosts, when set, are the only names the validator resolves (name -> IP, through an /etc/hosts
	// bind-mounted in a private mount namespace); otherwise every name resolves to 127.0.0.1.
	Hosts map[string]string
}

// Pebble is a running Pebble.
type Pebble struct {
	// DirectoryURL is the ACME directory; CAFile the PEM file to trust for its HTTPS.
	DirectoryURL, CAFile string
	mgmt, log            string
	client               *http.Client
}

// Orders counts the orders Pebble has created so far (from its log).
func (p *Pebble) Orders(t testing.TB) int {
	t.Helper()
	out, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(out), "Added order")
}

// Binary returns Pebble's path, building it first when missing.
func Binary(t testing.TB) string {
	t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	// The version in the directory name makes a new pin build anew; `make deps` builds the same path
	// before the tests, so parallel test packages do not race to install it.
	dir := filepath.Join(home, ".cache", "baregate", "pebble-"+Version)
	bin := filepath.Join(dir, "pebble")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "install", "github.com/letsencrypt/pebble/v2/cmd/pebble@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	cmd.Dir = os.TempDir() // outside any module, so go install uses the version asked for
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building pebble: %v\n%s", err, out)
	}
	return bin
}

// Start runs Pebble until the test ends.
func Start(t testing.TB, opts Options) *Pebble {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	if opts.ListenIP == "" {
		opts.ListenIP = "127.0.0.1"
	}
	if opts.Command == nil {
		opts.Command = func(argv ...string) *exec.Cmd { return exec.Command(argv[0], argv[1:]...) }
	}
	cert, err := selfsigned.New("pebble", []string{opts.ListenIP, "127.0.0.1", "localhost"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &Pebble{CAFile: filepath.Join(dir, "cert.pem"), log: filepath.Join(dir, "pebble.log")}
	keyFile := filepath.Join(dir, "key.pem")
	writeFile(t, p.CAFile, cert.CertPEM)
	writeFile(t, keyFile, cert.KeyPEM)
	if opts.Port == 0 {
		opts.Port = 14000
	}
	addr, mgmt := net.JoinHostPort(opts.ListenIP, strconv.Itoa(opts.Port)), net.JoinHostPort(opts.ListenIP, strconv.Itoa(opts.Port+1000))
	if opts.ListenIP == "127.0.0.1" {
		addr, mgmt = freePort(t), freePort(t)
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": addr, "managementListenAddress": mgmt,
		"certificate": p.CAFile, "privateKey": keyFile,
		"httpPort": opts.HTTPPort, "tlsPort": opts.TLSPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter":   map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm": "ecdsa",
	}}
	cfgFile := filepath.Join(dir, "pebble.json")
	data, _ := json.Marshal(cfg)
	writeFile(t, cfgFile, data)

	argv := []string{bin, "-config", cfgFile}
	if opts.Hosts == nil {
		argv = append(argv, "-dnsserver", startDNS(t))
	} else {
		var hosts []byte
		for name, ip := range opts.Hosts {
			hosts = fmt.Appendf(hosts, "%s %s\n", ip, name)
		}
		hostsFile := filepath.Join(dir, "hosts")
		writeFile(t, hostsFile, hosts)
		argv = append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c", `mount --bind "$1" /etc/hosts && shift && exec "$@"`, "sh", hostsFile}, argv...)
	}
	cmd := opts.Command(argv...)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	log, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pebble: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(log.Name())
			t.Logf("pebble log:\n%s", out)
		}
		log.Close()
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cert.CertPEM)
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: opts.Dial}}
	p.DirectoryURL, p.mgmt = "https://"+addr+"/dir", "https://"+mgmt
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.client.Get(p.DirectoryURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not answer on %s: %v", p.DirectoryURL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Root returns the root certificate Pebble issues under, from its management API.
func (p *Pebble) Root(t testing.TB) *x509.Certificate {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("fetching pebble's root: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	b, _ := pem.Decode(body)
	if b == nil {
		t.Fatalf("pebble's root is not PEM: %q", body)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// FreePort returns a loopback port nothing listens on (for a challenge that must fail).
func FreePort(t testing.TB) int {
	_, port, _ := net.SplitHostPort(freePort(t))
	var n int
	fmt.Sscan(port, &n)
	return n
}
