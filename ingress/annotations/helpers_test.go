package annotations

import (
	"crypto/sha1"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ingress builds an Ingress in namespace "shop" with ingress-nginx annotations given without prefix
// (keys with a "/" are taken as written) and one rule per path.
func ingress(ann map[string]string, paths ...string) *networkingv1.Ingress {
	full := map[string]string{}
	for k, v := range ann {
		if !strings.Contains(k, "/") {
			k = NginxPrefix + k
		}
		full[k] = v
	}
	pt := networkingv1.PathTypeImplementationSpecific
	var hp []networkingv1.HTTPIngressPath
	for _, p := range paths {
		hp = append(hp, networkingv1.HTTPIngressPath{Path: p, PathType: &pt})
	}
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: full},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "shop.example.com",
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: hp}}}}},
	}
}

// secrets serves the given Secrets by namespace/name.
func secrets(list ...*corev1.Secret) SecretGetter {
	return func(key types.NamespacedName) *corev1.Secret {
		for _, s := range list {
			if s.Namespace == key.Namespace && s.Name == key.Name {
				return s
			}
		}
		return nil
	}
}

// reasons renders problems as "Reason name" with the nginx prefix cut, sorted, for comparison.
func reasons(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Reason+" "+strings.TrimPrefix(p.Annotation, NginxPrefix))
	}
	slices.Sort(out)
	return out
}

func wantProblems(t *testing.T, got []Problem, want ...string) {
	t.Helper()
	slices.Sort(want)
	if g := reasons(got); !slices.Equal(g, want) {
		t.Errorf("problems = %q, want %q; full: %v", g, want, got)
	}
	for _, p := range got {
		if p.Message == "" {
			t.Errorf("problem %v has no message", p)
		}
	}
}

// newTestRand is a uniform integer source seeded from the OS, so the statistical tests see fresh
// draws each run.
func newTestRand() func(n int) int { return rand.IntN }

func sha1Sum(s string) []byte { sum := sha1.Sum([]byte(s)); return sum[:] }
