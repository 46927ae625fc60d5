package route

import (
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
)

// BenchmarkBuild5000 is one route table rebuild with 5,000 single-route Ingresses, the unit of
// route propagation cost.
func BenchmarkBuild5000(b *testing.B) {
	var ings []*networkingv1.Ingress
	for i := range 5000 {
		ings = append(ings, fx.Ingress(fmt.Sprint("r", i), 5000-i, fx.Rule(fmt.Sprintf("r%d.example.com", i), fx.Path("Prefix", "/", fx.Backend("web", 80)))))
	}
	snap := served(ings...)
	var bld Builder
	b.ReportAllocs()
	for b.Loop() {
		bld.Build(snap)
	}
}
