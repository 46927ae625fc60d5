package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// writeSecret makes sure h's kubernetes.io/tls Secret holds the certificate this replica serves, so an
// Ingress can name it in spec.tls. Secrets without ManagedLabel are the user's: they are never
// overwritten (a Warning Event says so). A Secret holding a certificate that expires later is left
// alone, so two replicas never flip it back and forth.
func (m *Manager) writeSecret(ctx context.Context, h Host, st *hostState) error {
	m.mu.Lock()
	cert, written := st.cert, st.written
	m.mu.Unlock()
	mark := h.Secret.String() + " " + cert.Leaf.SerialNumber.String()
	if written == mark {
		return nil
	}
	keyPEM, err := privateKeyPEM(cert)
	if err != nil {
		return fmt.Errorf("encoding the key of %s: %w", h.Name, err)
	}
	secrets := m.deps.Client.CoreV1().Secrets(h.Secret.Namespace)
	want := map[string][]byte{corev1.TLSCertKey: chainPEM(cert), corev1.TLSPrivateKeyKey: keyPEM}
	cur, err := secrets.Get(ctx, h.Secret.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: h.Secret.Name, Namespace: h.Secret.Namespace,
				Labels:      map[string]string{ManagedLabel: "true"},
				Annotations: map[string]string{HostAnnotation: h.Name},
			},
			Type: corev1.SecretTypeTLS,
			Data: want,
		}, metav1.CreateOptions{})
	case err != nil:
	case cur.Labels[ManagedLabel] != "true":
		m.event(h.Ingress, corev1.EventTypeWarning, "ACMESecretNotManaged", "Secret %s exists and was not written by baregate: the ACME certificate for %s is served but not written to it (delete the Secret to let baregate manage it)", h.Secret, h.Name)
	case bytes.Equal(cur.Data[corev1.TLSCertKey], want[corev1.TLSCertKey]) || expiresLater(cur, cert):
	default:
		cur = cur.DeepCopy()
		cur.Data = want
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing the certificate of %s to Secret %s: %w", h.Name, h.Secret, err)
	}
	m.update(st, func(st *hostState) { st.written = mark })
	return nil
}

// expiresLater reports whether the Secret already holds a valid certificate outliving c.
func expiresLater(s *corev1.Secret, c *tls.Certificate) bool {
	have, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	return err == nil && have.Leaf.NotAfter.After(c.Leaf.NotAfter)
}

func privateKeyPEM(c *tls.Certificate) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// cacheEntry encodes a certificate in autocert's cache format (key, then chain).
func cacheEntry(c *tls.Certificate) ([]byte, error) {
	key, err := privateKeyPEM(c)
	if err != nil {
		return nil, err
	}
	return append(key, chainPEM(c)...), nil
}
