package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Address plan of the lab's Services (DESIGN.md).
const (
	ServiceCIDRv4 = "198.19.0.0/16"
	ServiceCIDRv6 = "2001:db8:2::/112"
)

// controllers are the kube-controller-manager controllers the lab runs: what turns Services, Pods and
// Deployments into EndpointSlices and ReplicaSets, cleans up namespaces and owned objects, and makes the
// default ServiceAccount without which Pods are refused.
const controllers = "endpoints-controller,endpointslice-controller,endpointslice-mirroring-controller," +
	"deployment-controller,replicaset-controller,namespace-controller," +
	"garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller," +
	"pod-garbage-collector-controller,root-ca-certificate-publisher-controller"

// ControlPlaneOptions configures StartControlPlane.
type ControlPlaneOptions struct {
	// Dir is the state directory (certificates, etcd data, kubeconfig, logs); it is created.
	Dir string
	// Netns is the network namespace the processes run in; "" = the current one.
	Netns string
	// Address is the IP the API server binds and advertises; default 127.0.0.1.
	Address string
	// Controllers also runs kube-controller-manager.
	Controllers bool
	// Log receives the processes' output besides Dir/*.log; nil = only the files.
	Log io.Writer
	// BinDir holds kube-apiserver and kube-controller-manager; "" = K8sBinDir.
	BinDir string
	// Etcd is the etcd binary; "" = etcd on PATH (Debian's etcd-server).
	Etcd string
}

// ControlPlane is a running etcd, kube-apiserver and optionally kube-controller-manager.
type ControlPlane struct {
	o        ControlPlaneOptions
	pki      pki
	etcdURL  string
	apiPort  int
	kubeconf string

	mu   sync.Mutex
	etcd *process
	api  *process
	kcm  *process
}

// StartControlPlane starts the control plane and returns once the API server is ready, the chart's CRDs
// are served and (with Controllers) the default ServiceAccount exists. ctx bounds the start-up only; the
// processes run until Stop.
func StartControlPlane(ctx context.Context, o ControlPlaneOptions) (*ControlPlane, error) {
	if o.Address == "" {
		o.Address = "127.0.0.1"
	}
	if net.ParseIP(o.Address) == nil {
		return nil, fmt.Errorf("control plane address %q is not an IP", o.Address)
	}
	if o.Etcd == "" {
		o.Etcd = "etcd"
	}
	if o.BinDir == "" {
		d, err := K8sBinDir(ctx)
		if err != nil {
			return nil, err
		}
		o.BinDir = d
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating control plane dir: %w", err)
	}
	hosts := []string{o.Address, "127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "198.19.0.1", "2001:db8:2::1"}
	p, err := generatePKI(o.Dir, hosts)
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{o: o, pki: p, kubeconf: filepath.Join(o.Dir, "kubeconfig")}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, true); err != nil {
		return nil, err
	}
	if err := InstallCRDs(ctx, c.RESTConfig()); err != nil {
		return nil, err
	}
	if o.Controllers {
		if err := c.startControllers(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return c, nil
}

// KubeconfigPath is an admin kubeconfig for the API server; from outside Netns it needs the lab's routes.
func (c *ControlPlane) KubeconfigPath() string { return c.kubeconf }

// Server is the API server URL.
func (c *ControlPlane) Server() string {
	return "https://" + hostPort(c.o.Address, c.apiPort)
}

// RESTConfig is an admin client config that dials from inside the control plane's namespace, so it works
// from the test process whatever namespace that runs in.
func (c *ControlPlane) RESTConfig() *rest.Config {
	cfg := &rest.Config{
		Host: c.Server(),
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: c.pki.caCert, CertFile: c.pki.adminCert, KeyFile: c.pki.adminKey,
		},
		// The lab's API server is ours alone: client-side throttling would only make the benchmarks that
		// create tens of thousands of objects wait (30k Services and slices took over 10 minutes at 100).
		QPS:   2000,
		Burst: 4000,
	}
	if c.o.Netns != "" {
		cfg.Dial = DialContextIn(c.o.Netns)
	}
	return cfg
}

// Client is an admin clientset (RESTConfig).
func (c *ControlPlane) Client() (kubernetes.Interface, error) {
	return kubernetes.NewForConfig(c.RESTConfig())
}

// StopAPIServer stops only the API server, as in an API outage; etcd and the controllers keep running.
func (c *ControlPlane) StopAPIServer() error {
	c.mu.Lock()
	api := c.api
	c.api = nil
	c.mu.Unlock()
	if api == nil {
		return nil
	}
	return api.stop(10 * time.Second)
}

// StartAPIServer starts the API server again on the same address and port and waits until it is ready;
// it does nothing while the API server runs.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	running := c.api != nil && !c.api.exited()
	c.mu.Unlock()
	if running {
		return nil
	}
	return c.startAPIServer(ctx, false)
}

// Stop ends every process of the control plane; the state directory is kept for post-mortems.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	procs := []*process{c.kcm, c.api, c.etcd}
	c.kcm, c.api, c.etcd = nil, nil, nil
	c.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if p != nil {
			errs = append(errs, p.stop(10*time.Second))
		}
	}
	return errors.Join(errs...)
}

func (c *ControlPlane) startEtcd(ctx context.Context) error {
	var lastErr error
	for range 5 {
		ports, err := freePorts(c.o.Netns, "127.0.0.1", 2)
		if err != nil {
			return err
		}
		c.etcdURL = "http://" + hostPort("127.0.0.1", ports[0])
		peer := "http://" + hostPort("127.0.0.1", ports[1])
		data := filepath.Join(c.o.Dir, "etcd")
		p, err := startProcess(c.o.Netns, "etcd", filepath.Join(c.o.Dir, "etcd.log"), c.o.Log, c.o.Etcd,
			"--name=lab", "--data-dir="+data,
			"--listen-client-urls="+c.etcdURL, "--advertise-client-urls="+c.etcdURL,
			"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
			"--initial-cluster=lab="+peer, "--initial-cluster-state=new",
			"--quota-backend-bytes=4294967296", "--log-level=warn")
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.etcd = p
		c.mu.Unlock()
		lastErr = c.waitHealthy(ctx, p, func(ctx context.Context) error {
			return c.httpGet(ctx, c.etcdURL+"/health")
		})
		if lastErr == nil {
			return nil
		}
		p.stop(time.Second)
		if !p.exited() || !strings.Contains(lastErr.Error(), "address already in use") {
			return fmt.Errorf("starting etcd: %w", lastErr)
		}
		os.RemoveAll(data)
	}
	return fmt.Errorf("starting etcd: %w", lastErr)
}

func (c *ControlPlane) apiServerArgs() []string {
	return []string{
		filepath.Join(c.o.BinDir, "kube-apiserver"),
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=" + c.o.Address,
		"--advertise-address=" + c.o.Address,
		"--secure-port=" + strconv.Itoa(c.apiPort),
		"--tls-cert-file=" + c.pki.serverCert,
		"--tls-private-key-file=" + c.pki.serverKey,
		"--client-ca-file=" + c.pki.caCert,
		"--service-account-key-file=" + c.pki.saPub,
		"--service-account-signing-key-file=" + c.pki.saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=" + ServiceCIDRv4 + "," + ServiceCIDRv6,
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC",
		// On loopback the `kubernetes` Service cannot get endpoints (loopback is not a valid endpoint).
		"--endpoint-reconciler-type=" + map[bool]string{true: "none", false: "lease"}[net.ParseIP(c.o.Address).IsLoopback()],
		"--profiling=false",
		"--v=1",
	}
}

func (c *ControlPlane) startAPIServer(ctx context.Context, pickPort bool) error {
	var lastErr error
	for range 5 {
		if pickPort {
			ports, err := freePorts(c.o.Netns, c.o.Address, 1)
			if err != nil {
				return err
			}
			c.apiPort = ports[0]
		}
		p, err := startProcess(c.o.Netns, "kube-apiserver", filepath.Join(c.o.Dir, "kube-apiserver.log"), c.o.Log, c.apiServerArgs()...)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.api = p
		c.mu.Unlock()
		if err := c.writeKubeconfig(); err != nil {
			return err
		}
		lastErr = c.waitHealthy(ctx, p, c.readyz)
		if lastErr == nil {
			return nil
		}
		p.stop(time.Second)
		if !pickPort || !p.exited() || !strings.Contains(lastErr.Error(), "address already in use") {
			return fmt.Errorf("starting kube-apiserver: %w", lastErr)
		}
	}
	return fmt.Errorf("starting kube-apiserver: %w", lastErr)
}

func (c *ControlPlane) startControllers(ctx context.Context) error {
	p, err := startProcess(c.o.Netns, "kube-controller-manager", filepath.Join(c.o.Dir, "kube-controller-manager.log"), c.o.Log,
		filepath.Join(c.o.BinDir, "kube-controller-manager"),
		"--kubeconfig="+c.kubeconf,
		"--controllers="+controllers,
		"--service-account-private-key-file="+c.pki.saKey,
		"--root-ca-file="+c.pki.caCert,
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		// Nothing scrapes it; port 0 keeps parallel labs from fighting over 10257.
		"--secure-port=0",
		"--concurrent-endpoint-syncs=10", "--concurrent-service-endpoint-syncs=10",
		"--v=1")
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.kcm = p
	c.mu.Unlock()
	cs, err := c.Client()
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// waitHealthy polls check until it succeeds, p exits, ctx ends or three minutes pass (a loaded
// 2-core machine running several test packages at once has been seen to need more than one).
func (c *ControlPlane) waitHealthy(ctx context.Context, p *process, check func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, p.exitError()
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		last = check(cctx)
		return last == nil, nil
	})
	if err != nil && p.exited() {
		return p.exitError()
	}
	if err != nil {
		return fmt.Errorf("%s not healthy: %w (last check: %v); end of %s:\n%s", p.name, err, last, p.logPath, tail(p.logPath, 1500))
	}
	return nil
}

func (c *ControlPlane) readyz(ctx context.Context) error {
	cs, err := c.Client()
	if err != nil {
		return err
	}
	_, err = cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

func (c *ControlPlane) httpGet(ctx context.Context, url string) error {
	client := &http.Client{Transport: &http.Transport{DialContext: DialContextIn(c.o.Netns)}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// writeKubeconfig writes an admin kubeconfig with the certificates embedded, so it can be copied
// anywhere in the lab.
func (c *ControlPlane) writeKubeconfig() error {
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		return b, nil
	}
	ca, err := read(c.pki.caCert)
	if err != nil {
		return err
	}
	crt, err := read(c.pki.adminCert)
	if err != nil {
		return err
	}
	key, err := read(c.pki.adminKey)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: c.Server(), CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "admin", Namespace: corev1.NamespaceDefault}
	cfg.CurrentContext = "lab"
	if err := clientcmd.WriteToFile(*cfg, c.kubeconf); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}
