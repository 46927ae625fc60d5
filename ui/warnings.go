package ui

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// maxWarnings bounds the warnings the dashboard keeps: the newest are the useful ones.
const maxWarnings = 200

// Warning is one Warning Event that baregate emitted.
type Warning struct {
	Time    time.Time `json:"time"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Count   int32     `json:"count"`
	Object  ObjectRef `json:"object"`
}

// Warnings is the warnings table with how fresh it is.
type Warnings struct {
	Items []Warning `json:"items"`
	// Updated is when the list was last read; Error says why the last read failed, if it did, in
	// which case Items are the last ones read.
	Updated *time.Time `json:"updated,omitempty"`
	Error   string     `json:"error,omitempty"`
}

type warningStore struct {
	mu sync.Mutex
	w  Warnings
}

func (s *warningStore) get() Warnings {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.w
	w.Items = nonNil(w.Items)
	return w
}

func (s *warningStore) set(items []Warning, at time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.w.Error = err.Error()
		return
	}
	s.w = Warnings{Items: items, Updated: &at}
}

// pollWarnings lists baregate's Warning Events periodically; a failed list (API server outage)
// keeps the previous ones and is retried at the next tick.
func (s *Server) pollWarnings(ctx context.Context) {
	logger := klog.FromContext(ctx)
	t := time.NewTicker(s.cfg.WarningsInterval)
	defer t.Stop()
	for {
		items, err := listWarnings(ctx, s.deps.Client, s.cfg.EventSource)
		if err != nil && ctx.Err() == nil {
			logger.Error(err, "Listing baregate's warnings failed; showing the previous ones")
		}
		s.warn.set(items, s.now(), err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// listWarnings returns the newest Warning Events emitted by source, newest first.
func listWarnings(ctx context.Context, client kubernetes.Interface, source string) ([]Warning, error) {
	var out []Warning
	opts := metav1.ListOptions{FieldSelector: "type=" + corev1.EventTypeWarning, Limit: 500}
	for page := 0; page < 10; page++ {
		list, err := client.CoreV1().Events(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing Warning Events: %w", err)
		}
		for _, ev := range list.Items {
			if ev.Type != corev1.EventTypeWarning || (ev.Source.Component != source && ev.ReportingController != source) {
				continue
			}
			out = append(out, Warning{
				Time:    eventTime(&ev),
				Reason:  ev.Reason,
				Message: ev.Message,
				Count:   max(ev.Count, 1),
				Object:  ObjectRef{Kind: ev.InvolvedObject.Kind, Namespace: ev.InvolvedObject.Namespace, Name: ev.InvolvedObject.Name},
			})
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	slices.SortFunc(out, func(a, b Warning) int { return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(a.Reason, b.Reason)) })
	if len(out) > maxWarnings {
		out = out[:maxWarnings]
	}
	return out, nil
}

func eventTime(ev *corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.UTC()
	case ev.Series != nil && !ev.Series.LastObservedTime.IsZero():
		return ev.Series.LastObservedTime.UTC()
	case !ev.EventTime.IsZero():
		return ev.EventTime.UTC()
	}
	return ev.FirstTimestamp.UTC()
}
