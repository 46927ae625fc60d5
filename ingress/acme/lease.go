package acme

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// LeaseName is the coordination.k8s.io Lease that serializes ACME orders across gateway replicas.
const LeaseName = "baregate-acme"

// errLeaseHeld means another replica holds the order Lease: it is ordering, so this one waits.
var errLeaseHeld = errors.New("another gateway replica holds the ACME order Lease")

// orderLease is a mutex over a Lease: one holder at a time, taken over only once the holder has not
// renewed it for Duration (a replica that died while ordering).
type orderLease struct {
	client    kubernetes.Interface
	namespace string
	identity  string
	duration  time.Duration
}

// acquire takes the Lease or returns errLeaseHeld; the returned release renews it until called. The
// API server's optimistic concurrency (resourceVersion) decides between replicas racing for it.
func (l *orderLease) acquire(ctx context.Context) (release func(), err error) {
	leases := l.client.CoordinationV1().Leases(l.namespace)
	now := metav1.NewMicroTime(time.Now())
	spec := coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(l.identity),
		LeaseDurationSeconds: ptr.To(int32(l.duration / time.Second)),
		AcquireTime:          &now,
		RenewTime:            &now,
	}
	cur, err := leases.Get(ctx, LeaseName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeaseName, Namespace: l.namespace}, Spec: spec}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil, errLeaseHeld
		}
	case err != nil:
	case l.heldByOther(cur, now.Time):
		return nil, errLeaseHeld
	default:
		cur = cur.DeepCopy()
		cur.Spec = spec
		cur, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			return nil, errLeaseHeld
		}
	}
	if err != nil {
		return nil, fmt.Errorf("taking the ACME order Lease %s/%s: %w", l.namespace, LeaseName, err)
	}
	renewCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.keep(renewCtx, cur)
	}()
	return func() {
		stop()
		<-done
	}, nil
}

func (l *orderLease) heldByOther(lease *coordinationv1.Lease, now time.Time) bool {
	s := lease.Spec
	if s.HolderIdentity == nil || *s.HolderIdentity == "" || *s.HolderIdentity == l.identity {
		return false
	}
	if s.RenewTime == nil || s.LeaseDurationSeconds == nil {
		return false
	}
	return now.Before(s.RenewTime.Add(time.Duration(*s.LeaseDurationSeconds) * time.Second))
}

// keep renews the Lease until ctx ends, then hands it back (holder cleared) so that the next replica
// need not wait for it to expire.
func (l *orderLease) keep(ctx context.Context, lease *coordinationv1.Lease) {
	leases := l.client.CoordinationV1().Leases(l.namespace)
	t := time.NewTicker(l.duration / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			next := lease.DeepCopy()
			next.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
			if updated, err := leases.Update(ctx, next, metav1.UpdateOptions{}); err == nil {
				lease = updated
			}
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			next := lease.DeepCopy()
			next.Spec.HolderIdentity = nil
			_, _ = leases.Update(rctx, next, metav1.UpdateOptions{}) // on failure it simply expires
			cancel()
			return
		}
	}
}
