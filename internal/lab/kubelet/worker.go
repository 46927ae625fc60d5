package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/internal/lab/echo"
)

// worker runs one pod from its first sight to its deletion. One goroutine owns all its state; the
// informer and the container and probe goroutines talk to it through channels.
type worker struct {
	k   *kubelet
	uid types.UID

	mu     sync.Mutex
	latest *corev1.Pod // newest version seen, from the informer or our own writes
	gone   bool        // the Pod object no longer exists
	notify chan struct{}

	exits  chan exitEvent
	probes chan probeEvent
	done   chan struct{} // closed when run returns, so senders never block on a finished worker

	// Owned by the run goroutine.
	pod         *corev1.Pod
	view        podView
	ctrs        []*ctr
	sb          *sandbox
	netns       string
	terminating bool
	killAt      time.Time
	passive     bool // never write this pod's status
	retryAt     time.Time
	retryDelay  time.Duration
}

// ctr is one container of the pod.
type ctr struct {
	spec      corev1.Container
	proc      *proc
	gen       int // counts starts, so events of an earlier start are ignored
	probe     *probeTracker
	stopProbe context.CancelFunc
	restartAt time.Time
}

type exitEvent struct{ idx, gen int }

type probeEvent struct {
	idx, gen int
	ok       bool
}

func newWorker(k *kubelet, pod *corev1.Pod) *worker {
	return &worker{k: k, uid: pod.UID, latest: pod, notify: make(chan struct{}, 1),
		exits: make(chan exitEvent, 8), probes: make(chan probeEvent, 8), done: make(chan struct{})}
}

// setPod hands over a newer Pod; it never blocks.
func (w *worker) setPod(p *corev1.Pod) {
	w.mu.Lock()
	if newerOrSame(p, w.latest) {
		w.latest = p
	}
	w.mu.Unlock()
	w.poke()
}

// setGone says the Pod object was deleted.
func (w *worker) setGone() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	w.poke()
}

func (w *worker) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *worker) snapshot() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.gone
}

// newerOrSame compares resource versions, which the lab's etcd issues as increasing integers.
func newerOrSame(a, b *corev1.Pod) bool {
	ra, errA := strconv.ParseUint(a.ResourceVersion, 10, 64)
	rb, errB := strconv.ParseUint(b.ResourceVersion, 10, 64)
	return errA != nil || errB != nil || ra >= rb
}

// run returns when the pod is gone from the API and the node, or ctx ends (then its containers are
// stopped and its namespace removed, but the Pod object is left alone).
func (w *worker) run(ctx context.Context) {
	w.pod, _ = w.snapshot()
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(w.pod), "uid", w.uid)
	ctx = klog.NewContext(ctx, logger)
	defer close(w.done)
	defer w.teardown(ctx)

	if w.pod.DeletionTimestamp == nil && !terminal(w.pod) {
		w.start(ctx)
	} else {
		// A pod this run never ran (it finished, or was being deleted, before a restart of the
		// kubelet): its status stays as it is, only its deletion is completed.
		w.view.Finished = true
		w.passive = true
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if w.step(ctx) {
			return
		}
		timer.Reset(w.nextWake())
		select {
		case <-ctx.Done():
			w.stopAll(2 * time.Second)
			return
		case <-w.notify:
		case e := <-w.exits:
			w.exited(ctx, e)
		case e := <-w.probes:
			if e.gen == w.ctrs[e.idx].gen && w.ctrs[e.idx].proc != nil {
				w.view.Containers[e.idx].Ready = e.ok
			}
		case <-timer.C:
		}
	}
}

// step reacts to the newest Pod and the clock; it reports whether the worker is done.
func (w *worker) step(ctx context.Context) bool {
	logger := klog.FromContext(ctx)
	pod, gone := w.snapshot()
	w.pod = pod
	now := time.Now()
	if gone {
		// Deleted without waiting for us (forced, or grace period 0): stop at once.
		w.stopAll(0)
		return true
	}
	if pod.DeletionTimestamp != nil && !w.terminating {
		w.terminating = true
		grace := int64(30)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		}
		w.killAt = now.Add(time.Duration(grace) * time.Second)
		logger.Info("Stopping pod", "gracePeriod", grace)
		for _, c := range w.ctrs {
			c.restartAt = time.Time{}
			if c.proc != nil {
				c.proc.signal(syscall.SIGTERM)
			}
		}
	}
	if w.terminating && !w.killAt.IsZero() && !now.Before(w.killAt) {
		for _, c := range w.ctrs {
			if c.proc != nil {
				c.proc.signal(syscall.SIGKILL)
			}
		}
		w.killAt = time.Time{}
	}
	for i, c := range w.ctrs {
		if !w.terminating && !c.restartAt.IsZero() && !now.Before(c.restartAt) {
			c.restartAt = time.Time{}
			w.startContainer(ctx, i)
		}
	}
	if w.terminating && !w.anyRunning() {
		w.view.Finished = true
		for i := range w.view.Containers {
			// A container that was backing off ends with its last exit, not waiting for a restart.
			if v := &w.view.Containers[i]; v.Exited != nil {
				v.Waiting, v.WaitingMsg = "", ""
			}
		}
		w.releaseNetwork(ctx)
	}
	w.pushStatus(ctx)
	if w.terminating && !w.anyRunning() {
		return w.deletePod(ctx)
	}
	return false
}

func (w *worker) nextWake() time.Duration {
	next := time.Hour
	consider := func(t time.Time) {
		if !t.IsZero() {
			next = min(next, max(time.Until(t), time.Millisecond))
		}
	}
	consider(w.killAt)
	consider(w.retryAt)
	for _, c := range w.ctrs {
		consider(c.restartAt)
	}
	return next
}

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// start creates the pod's network and starts its containers.
func (w *worker) start(ctx context.Context) {
	cfg := &w.k.cfg
	w.view.HostIPs = cfg.NodeIPs
	w.ctrs = make([]*ctr, len(w.pod.Spec.Containers))
	w.view.Containers = make([]containerView, len(w.pod.Spec.Containers))
	for i, c := range w.pod.Spec.Containers {
		w.ctrs[i] = &ctr{spec: c}
		w.view.Containers[i] = containerView{Name: c.Name, Image: c.Image}
	}
	if err := w.setupNetwork(ctx); err != nil {
		klog.FromContext(ctx).Error(err, "Setting up pod network")
		w.k.event(w.pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", err.Error())
		// Try again shortly: restart every container through the restart path.
		for _, c := range w.ctrs {
			c.restartAt = time.Now().Add(2 * time.Second)
		}
		return
	}
	for i := range w.ctrs {
		w.startContainer(ctx, i)
	}
}

func (w *worker) setupNetwork(ctx context.Context) error {
	cfg := &w.k.cfg
	if w.netns != "" {
		return nil
	}
	if w.pod.Spec.HostNetwork {
		w.netns = cfg.Netns
		w.view.PodIPs = cfg.NodeIPs
		w.view.Started = time.Now()
		return nil
	}
	var preferred []netip.Addr
	for _, p := range w.pod.Status.PodIPs {
		if a, err := netip.ParseAddr(p.IP); err == nil {
			preferred = append(preferred, a)
		}
	}
	ips, err := w.k.allocate(w.uid, preferred)
	if err != nil {
		return err
	}
	sb := &sandbox{nodeNetns: cfg.Netns, bridge: cfg.PodBridge, name: podNetns(cfg.NetnsPrefix, cfg.NodeName, w.uid),
		veth: hostVeth(w.uid), ips: ips, cidrs: cfg.PodCIDRs}
	if err := sb.create(ctx); err != nil {
		w.k.release(w.uid)
		return err
	}
	w.sb, w.netns = sb, sb.name
	w.view.PodIPs = ips
	w.view.Started = time.Now()
	return nil
}

// startContainer starts container i, or records why it cannot start.
func (w *worker) startContainer(ctx context.Context, i int) {
	if err := w.setupNetwork(ctx); err != nil {
		klog.FromContext(ctx).Error(err, "Setting up pod network")
		w.ctrs[i].restartAt = time.Now().Add(2 * time.Second)
		return
	}
	c, v := w.ctrs[i], &w.view.Containers[i]
	cfg := &w.k.cfg
	fail := func(reason, msg string) {
		v.Waiting, v.WaitingMsg = reason, msg
		klog.FromContext(ctx).Info("Cannot start container", "container", c.spec.Name, "reason", reason, "message", msg)
		w.k.event(w.pod, corev1.EventTypeWarning, reason, fmt.Sprintf("container %s: %s", c.spec.Name, msg))
	}
	env, err := containerEnv(w.pod, &c.spec, podAddrs{PodIPs: w.view.PodIPs, HostIPs: w.view.HostIPs})
	if err != nil {
		fail("CreateContainerConfigError", err.Error())
		return
	}
	program, args, ok := cfg.ProgramFor(c.spec.Image, commandLine(&c.spec, env))
	if !ok {
		fail("ErrImagePull", fmt.Sprintf("the lab has no program for image %q with command %q", c.spec.Image, commandLine(&c.spec, env)))
		return
	}
	if program == echo.Program {
		for _, p := range c.spec.Ports {
			flag := "--port="
			if p.Protocol == corev1.ProtocolUDP {
				flag = "--udp-port="
			}
			args = append(args, flag+strconv.Itoa(int(p.ContainerPort)))
		}
	}
	base := fmt.Sprintf("%s_%s_%s", w.pod.Namespace, w.pod.Name, c.spec.Name)
	p, err := startProc(w.netns, cfg.Self, program, args, env,
		filepath.Join(cfg.StateDir, "logs", base+".log"), filepath.Join(cfg.StateDir, "pids", string(w.uid)+"_"+c.spec.Name+".pid"))
	if err != nil {
		fail("RunContainerError", err.Error())
		return
	}
	if c.gen > 0 {
		v.Restarts++
	}
	c.gen++
	c.proc = p
	v.Waiting, v.WaitingMsg = "", ""
	v.Running, v.StartedAt, v.ID = true, p.started, "lab://"+strconv.Itoa(p.pid())
	v.Ready = c.spec.ReadinessProbe == nil
	klog.FromContext(ctx).Info("Started container", "container", c.spec.Name, "program", program, "args", args, "pid", p.pid())
	gen := c.gen
	go func() {
		<-p.done
		select {
		case w.exits <- exitEvent{idx: i, gen: gen}:
		case <-w.done:
		}
	}()
	if c.spec.ReadinessProbe != nil {
		pctx, cancel := context.WithCancel(ctx)
		c.stopProbe = cancel
		c.probe = newProbeTracker(c.spec.ReadinessProbe)
		go w.runProbe(pctx, i, gen, c.spec, c.probe, first(w.view.PodIPs))
	}
}

// runProbe probes one container start until pctx ends. The tracker is only touched here; the worker
// reads its verdict when an event arrives.
func (w *worker) runProbe(pctx context.Context, i, gen int, spec corev1.Container, t *probeTracker, podIP string) {
	initial, period, timeout := probeTiming(spec.ReadinessProbe)
	wait := initial
	for {
		select {
		case <-pctx.Done():
			return
		case <-time.After(wait):
		}
		wait = period
		actx, cancel := context.WithTimeout(pctx, timeout)
		err := probeOnce(actx, w.k.dial, spec.ReadinessProbe, &spec, netip.MustParseAddr(podIP))
		cancel()
		if pctx.Err() != nil {
			return
		}
		if t.observe(err == nil) {
			klog.FromContext(pctx).V(2).Info("Readiness changed", "container", spec.Name, "ready", t.ready, "err", err)
			select {
			case w.probes <- probeEvent{idx: i, gen: gen, ok: t.ready}:
			case <-pctx.Done():
				return
			}
		}
	}
}
