package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// trackedCodes are the status codes counted one by one; others are counted by class ("4xx"), which
// keeps the per-route counters a fixed array that requests update without locks or allocations.
var trackedCodes = [...]int{200, 201, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 429, 499, 500, 502, 503, 504}

const classSlots = 6 // 1xx..5xx and "other"

func codeSlot(code int) int {
	for i, c := range trackedCodes {
		if c == code {
			return i
		}
	}
	class := code / 100
	if class < 1 || class > 5 {
		class = 0
	}
	return len(trackedCodes) + class
}

func slotLabel(i int) string {
	if i < len(trackedCodes) {
		return strconv.Itoa(trackedCodes[i])
	}
	if c := i - len(trackedCodes); c > 0 {
		return strconv.Itoa(c) + "xx"
	}
	return "other"
}

// routeStats are the counters of one route, kept across table swaps by route key.
type routeStats struct {
	labels   []string // host, path, ingress, service
	codes    [len(trackedCodes) + classSlots]atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	latency  prometheus.Observer
}

func (s *routeStats) requests() (total, errors uint64) {
	for i := range s.codes {
		n := s.codes[i].Load()
		total += n
		if i < len(trackedCodes) && trackedCodes[i] >= 500 || i == len(trackedCodes)+5 {
			errors += n
		}
	}
	return total, errors
}

// backendStats are the counters of one backend (Service port), kept across swaps by backend key.
type backendStats struct {
	labels         []string // service, port
	upstreamErrors atomic.Uint64
	retries        atomic.Uint64
}

type metrics struct {
	requests, bytesIn, bytesOut, upstreamErrors, retries *prometheus.Desc
	latency                                              *prometheus.HistogramVec
	p                                                    *Proxy
}

func newMetrics(p *Proxy) *metrics {
	routeLabels := []string{"host", "path", "ingress", "service"}
	return &metrics{
		p:              p,
		requests:       prometheus.NewDesc("baregate_ingress_requests_total", "Requests answered, by route and status code.", append(routeLabels, "code"), nil),
		bytesIn:        prometheus.NewDesc("baregate_ingress_request_bytes_total", "Request body bytes received, by route.", routeLabels, nil),
		bytesOut:       prometheus.NewDesc("baregate_ingress_response_bytes_total", "Response body bytes sent, by route.", routeLabels, nil),
		upstreamErrors: prometheus.NewDesc("baregate_ingress_upstream_errors_total", "Failed attempts to reach a backend endpoint (connect errors, resets, timeouts), by backend.", []string{"service", "port"}, nil),
		retries:        prometheus.NewDesc("baregate_ingress_upstream_retries_total", "Requests retried on another endpoint, by backend.", []string{"service", "port"}, nil),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "baregate_ingress_request_duration_seconds",
			Help:    "Time from reading a request's headers to the end of its response, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, routeLabels),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.requests
	ch <- m.bytesIn
	ch <- m.bytesOut
	ch <- m.upstreamErrors
	ch <- m.retries
	m.latency.Describe(ch)
}

// Collect reads the atomic counters at scrape time, so that requests never touch a metric vector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	for _, s := range m.p.routeStats {
		for i := range s.codes {
			if n := s.codes[i].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(m.requests, prometheus.CounterValue, float64(n), append(s.labels[:4:4], slotLabel(i))...)
			}
		}
		ch <- prometheus.MustNewConstMetric(m.bytesIn, prometheus.CounterValue, float64(s.bytesIn.Load()), s.labels...)
		ch <- prometheus.MustNewConstMetric(m.bytesOut, prometheus.CounterValue, float64(s.bytesOut.Load()), s.labels...)
	}
	for _, b := range m.p.backendStats {
		ch <- prometheus.MustNewConstMetric(m.upstreamErrors, prometheus.CounterValue, float64(b.upstreamErrors.Load()), b.labels...)
		ch <- prometheus.MustNewConstMetric(m.retries, prometheus.CounterValue, float64(b.retries.Load()), b.labels...)
	}
	m.latency.Collect(ch)
}
