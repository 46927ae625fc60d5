package kubelet

import (
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podView is what the kubelet knows of a pod it runs, from which the pod's status follows.
type podView struct {
	Started    time.Time // sandbox (netns) ready; zero until then
	PodIPs     []netip.Addr
	HostIPs    []netip.Addr
	Containers []containerView
	// Finished means no container runs or will run again.
	Finished bool
}

// containerView is one container's state.
type containerView struct {
	Name, Image string
	ID          string // lab://<pid> while running
	Running     bool
	StartedAt   time.Time
	Ready       bool
	Restarts    int32
	// Waiting is why a container that is not running is not running (CreateContainerConfigError ...).
	Waiting, WaitingMsg string
	// Exited describes the last exit, if any.
	Exited *exit
}

type exit struct {
	Code                int32
	Reason              string
	StartedAt, Finished time.Time
}

// buildStatus merges the kubelet's view into the pod's current status, keeping fields it does not
// own (QOS class, conditions of others) and each condition's transition time while its value holds.
func buildStatus(cur corev1.PodStatus, v podView, now time.Time) corev1.PodStatus {
	st := *cur.DeepCopy()
	allReady := len(v.Containers) > 0
	allDone, anyFailed := true, false
	st.ContainerStatuses = nil
	for _, c := range v.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: c.ID,
			Ready: c.Ready && c.Running, RestartCount: c.Restarts, Started: ptr(c.Running)}
		switch {
		case c.Running:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: secs(c.StartedAt)}
			allDone = false
		case c.Waiting != "" || c.Exited == nil:
			reason := c.Waiting
			if reason == "" {
				reason = "ContainerCreating"
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.WaitingMsg}
			allDone = false
		default:
			cs.State.Terminated = terminated(c.Exited, c.ID)
			anyFailed = anyFailed || c.Exited.Code != 0
		}
		if c.Exited != nil && cs.State.Terminated == nil {
			cs.LastTerminationState.Terminated = terminated(c.Exited, "")
		}
		allReady = allReady && cs.Ready
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	st.Phase = corev1.PodPending
	switch {
	case v.Finished && allDone && anyFailed:
		st.Phase = corev1.PodFailed
	case v.Finished && allDone:
		st.Phase = corev1.PodSucceeded
	case !v.Started.IsZero():
		st.Phase = corev1.PodRunning
	}
	if !v.Started.IsZero() && st.StartTime == nil {
		st.StartTime = ptr(secs(v.Started))
	}
	st.PodIP, st.PodIPs = "", nil
	for _, ip := range v.PodIPs {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	if len(st.PodIPs) > 0 {
		st.PodIP = st.PodIPs[0].IP
	}
	st.HostIP, st.HostIPs = "", nil
	for _, ip := range v.HostIPs {
		st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip.String()})
	}
	if len(st.HostIPs) > 0 {
		st.HostIP = st.HostIPs[0].IP
	}

	sandbox := !v.Started.IsZero() && !v.Finished
	setCondition(&st, corev1.PodScheduled, true, now)
	setCondition(&st, corev1.PodReadyToStartContainers, sandbox, now)
	setCondition(&st, corev1.PodInitialized, true, now)
	setCondition(&st, corev1.ContainersReady, allReady, now)
	setCondition(&st, corev1.PodReady, allReady, now)
	return st
}

func terminated(e *exit, id string) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{ExitCode: e.Code, Reason: e.Reason, StartedAt: secs(e.StartedAt),
		FinishedAt: secs(e.Finished), ContainerID: id}
}

// setCondition sets a condition, moving its transition time only when its status changes.
func setCondition(st *corev1.PodStatus, typ corev1.PodConditionType, ok bool, now time.Time) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			if st.Conditions[i].Status != status {
				st.Conditions[i].Status = status
				st.Conditions[i].LastTransitionTime = secs(now)
			}
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: typ, Status: status, LastTransitionTime: secs(now)})
}

// secs drops sub-second precision, which the API does not store, so a status read back compares
// equal to the one written.
func secs(t time.Time) metav1.Time {
	if t.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(t.Truncate(time.Second))
}

func ptr[T any](v T) *T { return &v }

// equalStatus reports whether writing b over a would change nothing.
func equalStatus(a, b corev1.PodStatus) bool { return apiequality.Semantic.DeepEqual(a, b) }
