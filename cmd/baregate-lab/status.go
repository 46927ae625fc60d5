package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/baregate/baregate/internal/lab"
)

func cmdStatus(ctx context.Context, args []string) error {
	var f labFlags
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	f.add(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	names, err := lab.LabNetns(ctx, f.id)
	if err != nil {
		return err
	}
	info, err := lab.ReadInfo(f.stateDir())
	if err != nil {
		if len(names) > 0 {
			return fmt.Errorf("lab %q is not running, but left namespaces %v; remove them with `baregate-lab down --id %s`", f.id, names, f.id)
		}
		return fmt.Errorf("lab %q is not running", f.id)
	}
	alive := syscall.Kill(info.PID, 0) == nil
	printInfo(os.Stdout, info)
	fmt.Printf("  run by pid  %d (alive: %v)\n  namespaces  %s\n\n", info.PID, alive, strings.Join(names, " "))
	cfg, err := info.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tREADY\tADDRESSES\tPOD CIDRS")
	for _, n := range nodes.Items {
		var addrs []string
		for _, a := range n.Status.Addresses {
			addrs = append(addrs, a.Address)
		}
		fmt.Fprintf(w, "%s\t%v\t%s\t%s\n", n.Name, nodeReady(&n), strings.Join(addrs, ","), strings.Join(n.Spec.PodCIDRs, ","))
	}
	w.Flush()
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tPOD\tNODE\tPHASE\tREADY\tIPS")
	for _, p := range pods.Items {
		var ips []string
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%s\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, podReady(&p), strings.Join(ips, ","))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return printServices(ctx, cs)
}

// printServices lists the Services other than the API server's, with the IPs a client can use.
func printServices(ctx context.Context, cs kubernetes.Interface) error {
	svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing services: %w", err)
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tSERVICE\tTYPE\tCLUSTER-IPS\tEXTERNAL-IPS\tPORTS")
	for _, s := range svcs.Items {
		if s.Namespace == metav1.NamespaceDefault && s.Name == "kubernetes" {
			continue
		}
		var ext, ports []string
		for _, in := range s.Status.LoadBalancer.Ingress {
			ext = append(ext, in.IP)
		}
		ext = append(ext, s.Spec.ExternalIPs...)
		for _, p := range s.Spec.Ports {
			port := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
			if p.NodePort != 0 {
				port = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
			}
			ports = append(ports, port)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.Spec.Type, strings.Join(s.Spec.ClusterIPs, ","),
			strings.Join(ext, ","), strings.Join(ports, ","))
	}
	return w.Flush()
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
