package lbip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// AnnouncedByAnnotation on a Service names the node answering ARP/NDP for its primary IP (the first
// load-balancer ingress IP, else the first announced externalIP), for kubectl and the dashboard.
// Only that node writes it, and only when it differs.
const AnnouncedByAnnotation = "baregate.io/announced-by"

// annotationChanges returns the Services whose annotation this node (self) must change: to self
// where it owns the primary IP, or removed (nil) where it still claims a Service nobody announces.
// Where another node owns the IP, that node writes.
func annotationChanges(snap *cluster.Snapshot, assign []Assignment, self string) map[types.NamespacedName]*string {
	owner := make(map[netip.Addr]string, len(assign))
	for _, a := range assign {
		owner[a.IP] = a.Node
	}
	out := map[types.NamespacedName]*string{}
	for _, svc := range snap.Services {
		current, has := svc.Annotations[AnnouncedByAnnotation]
		primary, ok := primaryIP(svc, owner)
		switch {
		case ok && owner[primary] == self:
			if current != self {
				out[svc.Key()] = &self
			}
		case has && current == self && (!ok || owner[primary] == ""):
			out[svc.Key()] = nil
		}
	}
	return out
}

func primaryIP(svc *cluster.Service, owner map[netip.Addr]string) (netip.Addr, bool) {
	if cluster.IsOurLoadBalancer(svc.Service) {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(ing.IP); err == nil {
				if _, ok := owner[ip.Unmap()]; ok {
					return ip.Unmap(), true
				}
			}
		}
	}
	for _, s := range svc.Spec.ExternalIPs {
		if ip, err := netip.ParseAddr(s); err == nil {
			if _, ok := owner[ip.Unmap()]; ok {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// annotate writes the announced-by annotations this node is responsible for. Failures are returned
// for a retry; the announcements themselves are already in force.
func (lb *LB) annotate(ctx context.Context, snap *cluster.Snapshot, assign []Assignment) error {
	if lb.deps.Client == nil {
		return nil
	}
	var errs []error
	for key, value := range annotationChanges(snap, assign, lb.deps.NodeName) {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{AnnouncedByAnnotation: value}}})
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = lb.deps.Client.CoreV1().Services(key.Namespace).Patch(pctx, key.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("annotating Service %s with its announcing node: %w", key, err))
		}
	}
	return errors.Join(errs...)
}
