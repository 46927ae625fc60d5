package cluster

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// ACME certificate states, as ACMECertificate.State reports them.
const (
	// ACMEPending: no valid certificate yet (waiting for the issuance Lease, or ordering now).
	ACMEPending = "pending"
	// ACMEIssued: a valid certificate is served.
	ACMEIssued = "issued"
	// ACMEFailed: the last order failed; LastError says why and the order is retried with back-off.
	// A certificate from an earlier order may still be served (NotAfter is then set).
	ACMEFailed = "failed"
)

// ACMECertificate is the ACME state of one host of a served Ingress that asks for a certificate.
type ACMECertificate struct {
	Host    string
	Ingress types.NamespacedName
	// Secret is the kubernetes.io/tls Secret the certificate is written to.
	Secret types.NamespacedName
	State  string
	// NotAfter is when the served certificate expires (zero without one); RenewAt is when it will be
	// renewed.
	NotAfter, RenewAt time.Time
	// LastError is the ACME error of the last failed order (empty after a success); LastAttempt is
	// when this gateway last ordered, zero if it never did.
	LastError   string
	LastAttempt time.Time
}

// ACMESource lists the ACME state of every host that asks for a certificate, as this gateway sees
// it (replicas share certificates through Secrets, so they agree once an order has finished).
type ACMESource interface {
	ACMECertificates() []ACMECertificate
}
