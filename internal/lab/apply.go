package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/baregate/baregate/charts/baregate/crds"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// fieldManager names the lab in managedFields of what it applies.
const fieldManager = "baregate-lab"

// Apply server-side-applies every object of a multi-document YAML or JSON manifest, in order, as
// `kubectl apply --server-side --force-conflicts` would. Namespaced objects without a namespace go to
// "default".
func Apply(ctx context.Context, cfg *rest.Config, manifest []byte) error {
	return ApplyInNamespace(ctx, cfg, metav1.NamespaceDefault, manifest)
}

// ApplyInNamespace is Apply with namespaced objects that name no namespace going to ns.
func ApplyInNamespace(ctx context.Context, cfg *rest.Config, ns string, manifest []byte) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("decoding manifest: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			// A CRD applied earlier in the same manifest is not in the cached discovery yet.
			mapper.Reset()
			if m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				return fmt.Errorf("finding the resource of %s %s: %w", gvk, obj.GetName(), err)
			}
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(ns)
			}
			ri = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		if _, err := ri.Apply(ctx, obj.GetName(), &obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
			return fmt.Errorf("applying %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
	}
}

// InstallCRDs applies the chart's CRDs and waits until the API server serves them.
func InstallCRDs(ctx context.Context, cfg *rest.Config) error {
	files, err := fs.Glob(crds.FS, "*.yaml")
	if err != nil {
		return fmt.Errorf("listing CRDs: %w", err)
	}
	var all bytes.Buffer
	for _, f := range files {
		b, err := crds.FS.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading CRD %s: %w", f, err)
		}
		all.WriteString("\n---\n")
		all.Write(b)
	}
	if err := Apply(ctx, cfg, all.Bytes()); err != nil {
		return fmt.Errorf("installing CRDs: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating discovery client: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		rl, err := dc.ServerResourcesForGroupVersion("metallb.io/v1beta1")
		if err != nil {
			return false, nil
		}
		found := map[string]bool{}
		for _, r := range rl.APIResources {
			found[r.Name] = true
		}
		return found["ipaddresspools"] && found["l2advertisements"], nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the MetalLB CRDs to be served: %w", err)
	}
	return nil
}
