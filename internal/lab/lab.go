package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options configures Up.
type Options struct {
	// ID prefixes every namespace of the lab, so labs of parallel test packages do not meet; lower-case
	// letters and digits, starting with a letter, at most 12. Default "lab".
	ID string
	// Nodes (1-9, default 2) and Clients (0-19) are how many hosts of each kind the LAN has.
	Nodes, Clients int
	// Dir holds the lab's state (control plane, kubeconfig, logs); default $TMPDIR/baregate-lab-<ID>.
	// It is emptied at start.
	Dir string
	// StartGateway runs baregate on every node at Up.
	StartGateway bool
	// GatewayBinary is the baregate binary; "" = built from ./cmd/baregate into Dir.
	GatewayBinary string
	// GatewayArgs are added to every gateway's command line after --node-name, --kubeconfig, --namespace.
	GatewayArgs []string
	// Self is a baregate-lab binary, which runs the pods' built-in programs (`pod-run`); "" = built from
	// ./cmd/baregate-lab into Dir.
	Self string
	// Log receives the output of every process of the lab besides the files in Dir; nil = files only.
	Log io.Writer
}

func (o *Options) setDefaults() error {
	if o.ID == "" {
		o.ID = "lab"
	}
	if !validID(o.ID) {
		return fmt.Errorf("lab id %q: want 1-12 lower-case letters or digits, starting with a letter", o.ID)
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("nodes %d: the address plan has room for 1-%d", o.Nodes, MaxNodes)
	}
	if o.Clients < 0 || o.Clients > MaxClients {
		return fmt.Errorf("clients %d: the address plan has room for 0-%d", o.Clients, MaxClients)
	}
	if o.Dir == "" {
		o.Dir = DefaultDir(o.ID)
	}
	return nil
}

func validID(id string) bool {
	if len(id) == 0 || len(id) > 12 || id[0] < 'a' || id[0] > 'z' {
		return false
	}
	for _, r := range id {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// DefaultDir is where a lab keeps its state unless told otherwise.
func DefaultDir(id string) string { return filepath.Join(os.TempDir(), "baregate-lab-"+id) }

// GatewayNamespace is where the lab's gateway Pods live, as the chart's DaemonSet's would.
const GatewayNamespace = "baregate-system"

// Lab is a running lab: network, control plane, a kubelet per node and optionally baregate per node.
type Lab struct {
	o      Options
	net    network
	cp     *ControlPlane
	client kubernetes.Interface

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	bgErr error
	// gatewayKubeconfig replaces the admin kubeconfig for gateways started after SetGatewayAccess.
	gatewayKubeconfig string
}

// Info is what `baregate-lab status` and other processes learn about a running lab.
type Info struct {
	ID         string `json:"id"`
	Nodes      int    `json:"nodes"`
	Clients    int    `json:"clients"`
	Dir        string `json:"dir"`
	Kubeconfig string `json:"kubeconfig"`
	Server     string `json:"server"`
	PID        int    `json:"pid"`
}

// Up builds the lab from scratch, first removing what a crashed lab of the same ID left behind, and
// returns once the API server serves, every node is registered and Ready, and the gateways (if asked)
// run. ctx bounds the start-up; the lab runs until Down.
func Up(ctx context.Context, o Options) (*Lab, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if err := Cleanup(ctx, o.ID); err != nil {
		return nil, fmt.Errorf("removing leftovers of lab %s: %w", o.ID, err)
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, fmt.Errorf("emptying %s: %w", o.Dir, err)
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", o.Dir, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l := &Lab{o: o, net: network{id: o.ID, nodes: o.Nodes, clients: o.Clients}, cancel: cancel}
	ok := false
	defer func() {
		if !ok {
			l.Down()
		}
	}()
	if err := l.buildBinaries(ctx); err != nil {
		return nil, err
	}
	if err := l.net.up(ctx); err != nil {
		return nil, fmt.Errorf("creating the lab network: %w", err)
	}
	var err error
	l.cp, err = StartControlPlane(ctx, ControlPlaneOptions{
		Dir: filepath.Join(o.Dir, "cp"), Netns: l.net.ns("cp"), Address: ControlPlaneIP,
		Controllers: true, Log: o.Log,
	})
	if err != nil {
		return nil, err
	}
	if l.client, err = l.cp.Client(); err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	if err := l.startKubelets(ctx, runCtx); err != nil {
		return nil, err
	}
	if o.StartGateway {
		for i := 1; i <= o.Nodes; i++ {
			if err := l.StartGateway(ctx, i); err != nil {
				return nil, err
			}
		}
	}
	if err := l.writeInfo(); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

// Down stops everything of the lab and removes its namespaces; Dir stays for its logs.
func (l *Lab) Down() error {
	l.cancel()
	l.wg.Wait()
	var errs []error
	if l.cp != nil {
		errs = append(errs, l.cp.Stop())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs = append(errs, Cleanup(ctx, l.o.ID))
	os.Remove(filepath.Join(l.o.Dir, "lab.json"))
	return errors.Join(errs...)
}

// Client is an admin clientset for the lab's API server, usable from the test process.
func (l *Lab) Client() kubernetes.Interface { return l.client }

// RESTConfig is the admin client config behind Client.
func (l *Lab) RESTConfig() *rest.Config { return l.cp.RESTConfig() }

// ControlPlane is the lab's control plane (for StopAPIServer/StartAPIServer).
func (l *Lab) ControlPlane() *ControlPlane { return l.cp }

// KubeconfigPath is an admin kubeconfig that works from every namespace of the lab.
func (l *Lab) KubeconfigPath() string { return l.cp.KubeconfigPath() }

// Options are the lab's options with defaults filled in.
func (l *Lab) Options() Options { return l.o }

// Info describes the running lab.
func (l *Lab) Info() Info {
	return Info{ID: l.o.ID, Nodes: l.o.Nodes, Clients: l.o.Clients, Dir: l.o.Dir,
		Kubeconfig: l.KubeconfigPath(), Server: l.cp.Server(), PID: os.Getpid()}
}

// Err reports the first failure of a background part of the lab (a kubelet), nil while all is well.
func (l *Lab) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bgErr
}

// NodeNetns is the network namespace of node i (1-based).
func (l *Lab) NodeNetns(i int) string { return l.net.ns(NodeName(i)) }

// ClientNetns is the network namespace of client i (1-based).
func (l *Lab) ClientNetns(i int) string { return l.net.ns(ClientName(i)) }

// HostNetns is the namespace of a lab host: "cp", "lan", "node<i>" or "client<i>".
func (l *Lab) HostNetns(host string) string { return l.net.ns(host) }

// Command prepares argv to run in a lab host's namespace (see HostNetns).
func (l *Lab) Command(ctx context.Context, host string, argv ...string) *exec.Cmd {
	return NetnsCommand(ctx, l.net.ns(host), argv...)
}

// Exec runs argv in a lab host's namespace and returns its combined output.
func (l *Lab) Exec(ctx context.Context, host string, argv ...string) ([]byte, error) {
	out, err := l.Command(ctx, host, argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%v on %s: %w: %s", argv, host, err, out)
	}
	return out, nil
}

// NetnsCommand prepares argv to run inside network namespace ns.
func NetnsCommand(ctx context.Context, ns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// CutNode pulls node i's cable from the LAN switch: it keeps running but nobody reaches it.
func (l *Lab) CutNode(ctx context.Context, i int) error {
	return l.net.setLink(ctx, NodeName(i), false)
}

// RestoreNode plugs node i back in.
func (l *Lab) RestoreNode(ctx context.Context, i int) error {
	return l.net.setLink(ctx, NodeName(i), true)
}

func (l *Lab) writeInfo() error {
	b, err := json.MarshalIndent(l.Info(), "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.o.Dir, "lab.json"), b, 0o644); err != nil {
		return fmt.Errorf("writing lab.json: %w", err)
	}
	return nil
}

// ReadInfo reads what a running lab wrote into dir.
func ReadInfo(dir string) (Info, error) {
	var info Info
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil {
		return info, fmt.Errorf("no running lab in %s: %w", dir, err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("reading %s/lab.json: %w", dir, err)
	}
	return info, nil
}

func (l *Lab) setErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bgErr == nil {
		l.bgErr = err
	}
}

// buildBinaries builds the lab command and baregate when no binaries were given.
func (l *Lab) buildBinaries(ctx context.Context) error {
	if l.o.Self == "" {
		p, err := BuildBinary(ctx, "./cmd/baregate-lab", filepath.Join(l.o.Dir, "bin"))
		if err != nil {
			return err
		}
		l.o.Self = p
	}
	if l.o.StartGateway && l.o.GatewayBinary == "" {
		p, err := BuildBinary(ctx, "./cmd/baregate", filepath.Join(l.o.Dir, "bin"))
		if err != nil {
			return err
		}
		l.o.GatewayBinary = p
	}
	return nil
}

// RESTConfig loads the admin config of the running lab described by info, dialling from inside the
// lab's control-plane namespace so that it works from the host.
func (info Info) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", info.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", info.Kubeconfig, err)
	}
	cfg.Dial = DialContextIn(netnsName(info.ID, "cp"))
	return cfg, nil
}

// ReadyEndpoints counts the ready IPv4 endpoints the EndpointSlice controller lists for a Service.
func ReadyEndpoints(ctx context.Context, cs kubernetes.Interface, ns, svc string) int {
	return len(ReadyEndpointIPs(ctx, cs, ns, svc))
}

// ReadyEndpointIPs are the IPv4 addresses of a Service's ready endpoints in its EndpointSlices.
func ReadyEndpointIPs(ctx context.Context, cs kubernetes.Interface, ns, svc string) []string {
	slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return nil
	}
	var ips []string
	for _, s := range slices.Items {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				ips = append(ips, e.Addresses...)
			}
		}
	}
	return ips
}
