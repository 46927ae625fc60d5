package kubelet

import (
	"context"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// exited records a container's exit and schedules its restart as the pod's restartPolicy says.
func (w *worker) exited(ctx context.Context, e exitEvent) {
	c := w.ctrs[e.idx]
	if e.gen != c.gen || c.proc == nil {
		return
	}
	p := c.proc
	c.proc = nil
	if c.stopProbe != nil {
		c.stopProbe()
	}
	v := &w.view.Containers[e.idx]
	reason := "Completed"
	if p.code != 0 {
		reason = "Error"
	}
	v.Running, v.Ready, v.ID = false, false, ""
	v.Exited = &exit{Code: p.code, Reason: reason, StartedAt: p.started, Finished: p.finished}
	klog.FromContext(ctx).Info("Container exited", "container", c.spec.Name, "code", p.code)
	if w.terminating {
		return
	}
	policy := w.pod.Spec.RestartPolicy
	if policy == corev1.RestartPolicyAlways || policy == "" || (policy == corev1.RestartPolicyOnFailure && p.code != 0) {
		// Back off like a kubelet, doubling from a second, but capped low: lab tests wait on it.
		delay := min(time.Second<<min(v.Restarts, 5), 20*time.Second)
		c.restartAt = time.Now().Add(delay)
		v.Waiting, v.WaitingMsg = "CrashLoopBackOff", "back-off "+delay.String()+" restarting failed container"
		return
	}
	if !w.anyRunning() && !w.anyRestarting() {
		w.view.Finished = true
		w.releaseNetwork(ctx)
	}
}

func (w *worker) anyRunning() bool {
	for _, c := range w.ctrs {
		if c.proc != nil {
			return true
		}
	}
	return false
}

func (w *worker) anyRestarting() bool {
	for _, c := range w.ctrs {
		if !c.restartAt.IsZero() {
			return true
		}
	}
	return false
}

// stopAll sends SIGTERM, waits up to grace, then SIGKILLs what is left and waits for it.
func (w *worker) stopAll(grace time.Duration) {
	for _, c := range w.ctrs {
		c.restartAt = time.Time{}
		if c.proc != nil {
			c.proc.signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(grace)
	for _, c := range w.ctrs {
		if c.proc == nil {
			continue
		}
		select {
		case <-c.proc.done:
		case <-deadline:
			deadline = nil // closed: the rest get no more time
		}
	}
	for i, c := range w.ctrs {
		if c.proc == nil {
			continue
		}
		c.proc.signal(syscall.SIGKILL)
		select {
		case <-c.proc.done:
		case <-time.After(10 * time.Second):
		}
		if c.stopProbe != nil {
			c.stopProbe()
		}
		c.proc = nil
		w.view.Containers[i].Running, w.view.Containers[i].Ready = false, false
	}
}

// releaseNetwork removes the pod's namespace and frees its IPs.
func (w *worker) releaseNetwork(ctx context.Context) {
	if w.sb != nil {
		if err := w.sb.remove(context.WithoutCancel(ctx)); err != nil {
			klog.FromContext(ctx).Error(err, "Removing pod network")
			return // try again on the next step
		}
		w.sb = nil
		w.k.release(w.uid)
	}
	w.netns = ""
}

// teardown leaves nothing of the pod on the node.
func (w *worker) teardown(ctx context.Context) {
	if w.anyRunning() {
		w.stopAll(0)
	}
	w.releaseNetwork(ctx)
	w.k.workerDone(w)
}

// pushStatus writes the pod's status when it differs from what the API holds. Failures are retried
// with back-off from the worker loop; the containers keep running whatever the API server does.
func (w *worker) pushStatus(ctx context.Context) {
	now := time.Now()
	if w.passive || now.Before(w.retryAt) {
		return
	}
	st := buildStatus(w.pod.Status, w.view, now)
	if equalStatus(st, w.pod.Status) {
		return
	}
	pod := w.pod.DeepCopy()
	pod.Status = st
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pods := w.k.cfg.Client.CoreV1().Pods(pod.Namespace)
	got, err := pods.UpdateStatus(actx, pod, metav1.UpdateOptions{})
	switch {
	case err == nil:
		w.retryAt, w.retryDelay = time.Time{}, 0
		w.setPod(got)
		w.pod = got
		return
	case apierrors.IsNotFound(err):
		w.setGone()
		return
	case apierrors.IsConflict(err):
		if fresh, gerr := pods.Get(actx, pod.Name, metav1.GetOptions{}); gerr == nil && fresh.UID == w.uid {
			w.setPod(fresh)
			w.retryAt = now
			return
		}
	}
	w.retryDelay = min(max(2*w.retryDelay, 500*time.Millisecond), 10*time.Second)
	w.retryAt = now.Add(w.retryDelay)
	klog.FromContext(ctx).V(1).Info("Writing pod status failed; retrying", "err", err, "in", w.retryDelay)
}

// deletePod removes the Pod object once its containers are gone, as a kubelet ends a graceful
// deletion; it reports whether the worker is done.
func (w *worker) deletePod(ctx context.Context) bool {
	now := time.Now()
	if now.Before(w.retryAt) {
		return false
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := w.k.cfg.Client.CoreV1().Pods(w.pod.Namespace).Delete(actx, w.pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &w.uid},
	})
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		klog.FromContext(ctx).Info("Pod deleted")
		return true
	}
	w.retryDelay = min(max(2*w.retryDelay, 500*time.Millisecond), 10*time.Second)
	w.retryAt = now.Add(w.retryDelay)
	klog.FromContext(ctx).V(1).Info("Deleting pod failed; retrying", "err", err, "in", w.retryDelay)
	return false
}
